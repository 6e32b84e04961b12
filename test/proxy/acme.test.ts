/**
 * Certificates from an ACME CA (`--acme-domains`, proxy/acme/manager.ts): ordered at start for
 * each name, proven over HTTP-01 on the plain listener (every worker thread answers), written
 * into --tls-dir and served by SNI without a restart; kept while they have more than 30 days,
 * renewed when they have fewer. The CA is a small one of the test's own
 * (test/helpers/acme-server.ts) that checks every request's signature and fetches the answers
 * from the proxy's plain port with the name as Host.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, freePort, get, route, startProxy, startUpstream, table, waitFor, type ProxyProc, type Upstream } from './harness.js';
import { startAcmeServer, type TestAcme } from '../helpers/acme-server.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-acme-'));
const certs = join(dir, 'certs');
let up: Upstream;
let ca: TestAcme;
let proxyPort: (port: number) => void;
let portKnown: Promise<number>;

function expectPort(): void {
  portKnown = new Promise((resolve) => { proxyPort = resolve; });
}

/** GET over TLS with SNI `name`, the certificate checked against the test CA: status and the names it is for. */
function tlsGet(port: number, name: string): Promise<{ status: number; names: string; days: number }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path: '/', headers: { host: name }, servername: name, agent: false, ca: ca.caPem, rejectUnauthorized: true }, (res) => {
      const cert = (res.socket as TLSSocket).getPeerX509Certificate()!;
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, names: cert.subjectAltName ?? '', days: (Date.parse(cert.validTo) - Date.now()) / 86_400_000 }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function stats(p: ProxyProc): Promise<{ tls: { acme: Array<{ domain: string; notAfter: string | null; lastError: string | null }> } }> {
  const r = await request(`${p.admin}/stats`);
  return await r.body.json() as never;
}

function cli(...args: string[]) {
  return spawnSync(process.execPath, [join(ROOT, 'bin', 'berth.js'), ...args], { encoding: 'utf8', env: { ...process.env, BERTH_ACCESS_LOG: 'off' } });
}

beforeAll(async () => {
  mkdirSync(certs);
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=default.test',
    '-keyout', join(dir, 'default.key'), '-out', join(dir, 'default.crt')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  up = await startUpstream('app');
  expectPort();
  ca = await startAcmeServer(() => portKnown);
}, 60_000);

afterAll(async () => {
  await ca?.close();
  await up?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function start(domains: string, workers = '2'): Promise<{ p: ProxyProc; tlsPort: number }> {
  const tlsPort = await freePort();
  expectPort();
  const p = await startProxy(table([route('app', ['shop.acme.test'], [up.address])]), [
    '--workers', workers, '--tls-listen', `127.0.0.1:${tlsPort}`, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'),
    '--tls-dir', certs, '--acme-domains', domains, '--acme-email', 'ops@acme.test', '--acme-directory', ca.directory,
  ]);
  proxyPort(p.port);
  return { p, tlsPort };
}

/** `fn` with a proxy holding certificates for `domains`, stopped after. */
async function during(domains: string, workers: string, fn: (p: ProxyProc, tlsPort: number) => Promise<void>): Promise<void> {
  const { p, tlsPort } = await start(domains, workers);
  try {
    await fn(p, tlsPort);
  } finally {
    await p.stop();
  }
}

describe('ACME certificates', () => {
  it('orders one per name at start, proven on the plain listener by every worker, and serves them by SNI without a restart', async () => {
    const { p, tlsPort } = await start('shop.acme.test,own.acme.test');
    try {
      await waitFor(async () => (await stats(p)).tls.acme.every((a) => a.notAfter !== null), 30_000);
      expect((await stats(p)).tls.acme.map((a) => [a.domain, a.lastError])).toEqual([['shop.acme.test', null], ['own.acme.test', null]]);
      expect([...ca.issued].sort()).toEqual(['own.acme.test', 'shop.acme.test']);
      expect(ca.validations.every((v) => v.ok)).toBe(true);
      // a HEAD for the answer is answered too (without a body), the process unharmed
      expect(ca.validations.map((v) => v.head)).toEqual([200, 200]);
      // an app's name, and a name of the proxy's own with no app behind it: both served
      expect(await tlsGet(tlsPort, 'shop.acme.test')).toMatchObject({ status: 200, names: 'DNS:shop.acme.test' });
      expect(await tlsGet(tlsPort, 'own.acme.test')).toMatchObject({ status: 404, names: 'DNS:own.acme.test' });
      // the key is the operator's only
      expect(statSync(join(certs, 'shop.acme.test.key')).mode & 0o777).toBe(0o600);
      expect(new X509Certificate(readFileSync(join(certs, 'shop.acme.test.crt'))).checkIssued(new X509Certificate(ca.caPem))).toBe(true);
      // once proven, nothing is answered for a token: the path is the app's again (or no route)
      const later = await get(p, 'shop.acme.test', '/.well-known/acme-challenge/anything');
      expect(later.status).toBe(200);
      expect(JSON.parse(later.body).url).toBe('/.well-known/acme-challenge/anything');
      expect((await get(p, 'own.acme.test', '/.well-known/acme-challenge/anything')).status).toBe(404);
    } finally {
      await p.stop();
    }
  }, 60_000);

  it('keeps a certificate with more than 30 days left across restarts, and renews one with fewer', async () => {
    const before = ca.issued.length;
    // 60 days left: nothing ordered
    await during('shop.acme.test', '1', async (_p, tlsPort) => {
      await new Promise((r) => setTimeout(r, 1500));
      expect(ca.issued.length).toBe(before);
      expect((await tlsGet(tlsPort, 'shop.acme.test')).status).toBe(200);
    });
    // a certificate with 10 days left (this CA's next ones last 10): ordered at start, then renewed at the next
    ca.days = 10;
    await during('short.acme.test', '1', async (p, tlsPort) => {
      await waitFor(async () => (await stats(p)).tls.acme[0].notAfter !== null, 30_000);
      expect((await tlsGet(tlsPort, 'short.acme.test')).days).toBeLessThan(11);
    });
    ca.days = 60;
    await during('short.acme.test', '1', async (_p, tlsPort) => {
      await waitFor(async () => ca.issued.filter((d) => d === 'short.acme.test').length === 2, 30_000);
      await waitFor(async () => (await tlsGet(tlsPort, 'short.acme.test')).days > 50, 10_000);
    });
  }, 90_000);

  it('a pair of its own that does not fit (a crash between writing the key and the certificate) is skipped, not fatal, and ordered again', async () => {
    // shop.acme.test's key replaced by another: the pair on disk no longer fits
    const r = spawnSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(certs, 'shop.acme.test.key')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const before = ca.issued.filter((d) => d === 'shop.acme.test').length;
    const { p, tlsPort } = await start('shop.acme.test', '1');
    try {
      expect(p.logs()).toContain('does not fit its key');
      await waitFor(() => ca.issued.filter((d) => d === 'shop.acme.test').length === before + 1, 30_000);
      await waitFor(async () => (await tlsGet(tlsPort, 'shop.acme.test').catch(() => ({ status: 0 }))).status === 200, 10_000);
    } finally {
      await p.stop();
    }
  }, 60_000);

  it('bad flags stop the start with the reason', () => {
    const base = ['proxy', '--listen', '127.0.0.1:0', '--routes', '/nonexistent.json', '--tls-listen', '127.0.0.1:0', '--tls-cert', 'c', '--tls-key', 'k'];
    const cases: Array<[string[], RegExp]> = [
      [['--acme-domains', 'a.example.com', '--acme-email', 'o@example.com'], /needs --tls-dir/],
      [['--tls-dir', certs, '--acme-domains', '*.example.com', '--acme-email', 'o@example.com'], /wildcard/],
      [['--tls-dir', certs, '--acme-domains', 'localhost,a.example.com', '--acme-email', 'o@example.com'], /not a public DNS name/],
      [['--tls-dir', certs, '--acme-domains', '10.0.0.1', '--acme-email', 'o@example.com'], /not a public DNS name/],
      [['--tls-dir', certs, '--acme-domains', 'a.example.com'], /needs --acme-email/],
      [['--tls-dir', certs, '--acme-domains', 'a_b.example.com', '--acme-email', 'o@example.com'], /not a public DNS name/],
      [['--tls-dir', certs, '--acme-domains', 'a.example.com', '--acme-email', 'o@example.com,x@evil.test'], /needs --acme-email/],
      [['--tls-dir', certs, '--acme-domains', 'a.example.com', '--acme-email', 'o@example.com', '--acme-directory', 'http://ca.example.com/dir'], /https/],
      [['--tls-dir', certs, '--acme-email', 'o@example.com'], /need --acme-domains/],
    ];
    for (const [extra, want] of cases) {
      const r = cli(...base, ...extra);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(want);
    }
    const noTls = cli('proxy', '--listen', '127.0.0.1:0', '--routes', '/nonexistent.json', '--acme-domains', 'a.example.com');
    expect(noTls.stderr).toMatch(/need --tls-listen/);
  });
});
