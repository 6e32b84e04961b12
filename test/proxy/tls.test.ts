/**
 * TLS termination: an HTTPS listener beside the plain one (`--tls-listen`), a default certificate
 * and one per server name by SNI (`--tls-dir`, exact and wildcard), X-Forwarded-Proto: https,
 * worker threads, certificates checked at start, and hostile bytes on the TLS port.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, freePort, get, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-tls-'));
const certs = join(dir, 'certs');
let up: Upstream;
let p: ProxyProc;
let tlsPort = 0;
const pem: Record<string, string> = {};

/** A self-signed certificate for `cn` (also its subjectAltName) as name.crt / name.key in `where`. */
function selfSigned(where: string, name: string, cn: string): void {
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', `subjectAltName=DNS:${cn}`, '-keyout', join(where, `${name}.key`), '-out', join(where, `${name}.crt`)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
  pem[cn] = spawnSync('cat', [join(where, `${name}.crt`)], { encoding: 'utf8' }).stdout;
}

beforeAll(async () => {
  mkdirSync(certs);
  selfSigned(dir, 'default', 'default.test');
  selfSigned(certs, 'shop.example.com', 'shop.example.com');
  selfSigned(certs, '*.wild.example.com', '*.wild.example.com');
  up = await startUpstream('echo');
  tlsPort = await freePort();
  p = await startProxy(table([route('echo', ['shop.example.com', '*.wild.example.com', 'default.test'], [up.address])]),
    ['--tls-listen', `127.0.0.1:${tlsPort}`, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'), '--tls-dir', certs]);
}, 60_000);
afterAll(async () => {
  await p?.stop();
  await up?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface TlsResp { status: number; body: string; cn: string; proto: string | undefined }

/** GET over TLS to the proxy with SNI `servername` (none when undefined), checking the certificate against `ca`. */
function tlsGet(port: number, host: string, servername: string | undefined, ca?: string): Promise<TlsResp> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1', port, path: '/hello', headers: { host }, agent: false,
      ...(servername !== undefined ? { servername } : {}),
      ...(ca ? { ca, rejectUnauthorized: true } : { rejectUnauthorized: false }),
    }, (res) => {
      const cn = String((res.socket as TLSSocket).getPeerCertificate().subject?.CN ?? '');
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => {
        let proto: string | undefined;
        try { proto = JSON.parse(body).headers['x-forwarded-proto']; } catch { /* not the echo */ }
        resolve({ status: res.statusCode ?? 0, body, cn, proto });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('TLS termination', () => {
  it('serves the certificate SNI names (exact, wildcard), verified by a client, and says https upstream', async () => {
    const shop = await tlsGet(tlsPort, 'shop.example.com', 'shop.example.com', pem['shop.example.com']);
    expect(shop).toMatchObject({ status: 200, cn: 'shop.example.com', proto: 'https' });
    const wild = await tlsGet(tlsPort, 'a.wild.example.com', 'a.wild.example.com', pem['*.wild.example.com']);
    expect(wild).toMatchObject({ status: 200, cn: '*.wild.example.com', proto: 'https' });
  });

  it('uses the default certificate without SNI or for a name no other covers; the plain listener still says http', async () => {
    expect(await tlsGet(tlsPort, 'default.test', undefined)).toMatchObject({ status: 200, cn: 'default.test', proto: 'https' });
    expect(await tlsGet(tlsPort, 'default.test', 'default.test', pem['default.test'])).toMatchObject({ status: 200, cn: 'default.test' });
    const plain = await get(p, 'shop.example.com', '/hello');
    expect(plain.status).toBe(200);
    expect(JSON.parse(plain.body).headers['x-forwarded-proto']).toBe('http');
    // a client cannot claim https on the plain listener
    const forged = await get(p, 'shop.example.com', '/hello', { headers: { 'x-forwarded-proto': 'https' } });
    expect(JSON.parse(forged.body).headers['x-forwarded-proto']).toBe('http');
  });

  it('survives garbage and plain HTTP on the TLS port', async () => {
    for (const bytes of [Buffer.from('GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n'), Buffer.alloc(4096, 0x16), Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01])]) {
      await new Promise<void>((resolve) => {
        const s = netConnect(tlsPort, '127.0.0.1', () => s.end(bytes));
        s.on('data', () => {});
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        s.setTimeout(3000, () => { s.destroy(); resolve(); });
      });
    }
    expect(await tlsGet(tlsPort, 'shop.example.com', 'shop.example.com', pem['shop.example.com'])).toMatchObject({ status: 200 });
  });

  it('works from worker threads too', async () => {
    const port = await freePort();
    const w = await startProxy(table([route('echo', ['shop.example.com'], [up.address])]),
      ['--workers', '2', '--tls-listen', `127.0.0.1:${port}`, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'), '--tls-dir', certs]);
    try {
      for (let i = 0; i < 6; i++) expect(await tlsGet(port, 'shop.example.com', 'shop.example.com', pem['shop.example.com'])).toMatchObject({ status: 200, proto: 'https' });
    } finally {
      await w.stop();
    }
  });

  it('the private copies of the keys uWS read are removed when the proxy stops', async () => {
    const port = await freePort();
    const w = await startProxy(table([route('echo', ['shop.example.com'], [up.address])]),
      ['--tls-listen', `127.0.0.1:${port}`, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key')]);
    try {
      expect(existsSync(join(w.dir, 'tls'))).toBe(true);
      w.proc.kill('SIGTERM');
      await once(w.proc, 'exit');
      expect(existsSync(join(w.dir, 'tls'))).toBe(false);
    } finally {
      await w.stop();
    }
  });

  it('fallback copies made over TLS and over plain HTTP are kept apart: a page built for one scheme is never served on the other', async () => {
    const own = await startUpstream('scheme');
    const port = await freePort();
    const w = await startProxy(table([route('fb', ['shop.example.com'], [own.address], { circuitBreaker: { consecutiveFailures: 1, openMs: 60_000 }, fallbackCache: { ttlMs: 60_000 } })]),
      ['--tls-listen', `127.0.0.1:${port}`, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'), '--tls-dir', certs]);
    try {
      // the echo's body says the scheme the app was told (X-Forwarded-Proto): TLS first, plain last
      expect((await tlsGet(port, 'shop.example.com', 'shop.example.com')).proto).toBe('https');
      const plain = await get(w, 'shop.example.com', '/hello');
      expect(JSON.parse(plain.body).headers['x-forwarded-proto']).toBe('http');
      await own.close();
      // the app is down: each scheme gets its own copy
      const overTls = await tlsGet(port, 'shop.example.com', 'shop.example.com');
      expect([overTls.status, overTls.proto]).toEqual([200, 'https']);
      const overPlain = await get(w, 'shop.example.com', '/hello');
      expect(overPlain.headers['x-berth-fallback']).toBe('hit');
      expect(JSON.parse(overPlain.body).headers['x-forwarded-proto']).toBe('http');
    } finally {
      await w.stop();
    }
  });

  it('--https-redirect: the plain listener answers routed requests with 308 to the same URL on HTTPS', async () => {
    const port = await freePort();
    const r = await startProxy(table([route('echo', ['shop.example.com'], [up.address])]),
      ['--https-redirect', '--tls-listen', `127.0.0.1:${port}`, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'), '--tls-dir', certs]);
    try {
      const g = await get(r, 'shop.example.com:8080', '/a/b?q=1&x=%20');
      expect(g.status).toBe(308);
      expect(g.headers.location).toBe(`https://shop.example.com:${port}/a/b?q=1&x=%20`);
      const viaPath = await get(r, '127.0.0.1:8080', '/apps/shop.example.com/x');
      expect(viaPath.headers.location).toBe(`https://shop.example.com:${port}/x`);
      const head = await get(r, 'shop.example.com', '/h', { method: 'HEAD' });
      expect([head.status, head.body]).toEqual([308, '']);
      const post = await get(r, 'shop.example.com', '/form', { method: 'POST', body: 'a=1' });
      expect(post.status).toBe(308);
      expect(post.headers.connection).toBe('close');
      expect(up.hits).toBeGreaterThan(0);
      const hits = up.hits;
      // nothing reached the app over plain HTTP; unknown hosts are still 404; HTTPS serves
      expect((await get(r, 'nobody.test', '/')).status).toBe(404);
      expect(up.hits).toBe(hits);
      expect(await tlsGet(port, 'shop.example.com', 'shop.example.com', pem['shop.example.com'])).toMatchObject({ status: 200, proto: 'https' });
    } finally {
      await r.stop();
    }
  });

  it('refuses to start on a missing, mismatched or misnamed certificate, naming it, and on half a TLS configuration', async () => {
    const run = (args: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn(process.execPath, [join(ROOT, 'bin', 'berth.js'), 'proxy', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--routes', p.routesFile, '--data-dir', join(dir, 'd'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (d) => (out += d));
      c.stderr.on('data', (d) => (out += d));
      const t = setTimeout(() => c.kill('SIGKILL'), 15_000);
      c.on('exit', (code) => { clearTimeout(t); resolve({ code, out }); });
    });
    const tls = ['--tls-listen', '127.0.0.1:0'];
    expect(await run([...tls, '--tls-cert', join(dir, 'default.crt')])).toMatchObject({ code: 2 });
    expect((await run(['--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key')])).code).toBe(2);
    expect((await run(['--https-redirect'])).code).toBe(2);
    const missing = await run([...tls, '--tls-cert', join(dir, 'nope.crt'), '--tls-key', join(dir, 'default.key')]);
    expect(missing.code).toBe(1);
    expect(missing.out).toContain('nope.crt does not exist');
    const mismatched = await run([...tls, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(certs, 'shop.example.com.key')]);
    expect(mismatched.code).toBe(1);
    expect(mismatched.out).toMatch(/default\.crt \+ .*shop\.example\.com\.key: .*(mismatch|key)/i);
    const odd = join(dir, 'odd');
    mkdirSync(odd);
    writeFileSync(join(odd, 'not a host.crt'), pem['default.test']);
    const misnamed = await run([...tls, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'), '--tls-dir', odd]);
    expect(misnamed.code).toBe(1);
    expect(misnamed.out).toContain('"not a host.crt" is not named after a hostname');
  }, 60_000);
});
