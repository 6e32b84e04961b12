/**
 * Certificates renewed without a restart: SIGHUP (and POST /tls/reload on the admin listener)
 * reads the files again and serves new connections with them, on every worker; connections
 * already open keep working; a bad file keeps the certificates in use and names the file.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { Agent as UndiciAgent, WebSocket, type MessageEvent } from 'undici';
import type * as UWS from 'uWebSockets.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allOrNone } from '../../proxy/workers/pool.js';
import { adminToken, freePort, get, route, startProxy, startUpstream, table, waitFor, type ProxyProc, type Upstream } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-tls-reload-'));
const certs = join(dir, 'certs');
let up: Upstream;
let wsUp: { address: string; close(): void };
const uws = createRequire(import.meta.url)('uWebSockets.js') as typeof UWS;

/** A WebSocket echo upstream (uWS in this process) that greets with the X-Forwarded-Proto it was given. */
async function wsUpstream(): Promise<{ address: string; close(): void }> {
  const port = await freePort();
  const app = uws.App().ws<{ proto: string }>('/*', {
    upgrade(res, req, ctx) {
      res.upgrade({ proto: req.getHeader('x-forwarded-proto') }, req.getHeader('sec-websocket-key'), '', '', ctx);
    },
    open(ws) { ws.send(`proto ${ws.getUserData().proto}`); },
    message(ws, msg, isBinary) { ws.send(msg, isBinary); },
  });
  let token: UWS.us_listen_socket | false = false;
  await new Promise<void>((resolve) => app.listen('127.0.0.1', port, (t) => { token = t; resolve(); }));
  return { address: `127.0.0.1:${port}`, close: () => { if (token) uws.us_listen_socket_close(token); (app as unknown as { close(): void }).close(); } };
}

/** A WebSocket over TLS with SNI `name` to the app `host` (by /apps/{host}/: undici's client sets no Host). */
function openWss(port: number, name: string, host: string) {
  return new Promise<{ ws: WebSocket; next(): Promise<string> }>((resolve, reject) => {
    const dispatcher = new UndiciAgent({ connect: { rejectUnauthorized: false, servername: name } });
    const ws = new WebSocket(`wss://127.0.0.1:${port}/apps/${host}/`, { dispatcher });
    const queue: string[] = [];
    let wake: (() => void) | null = null;
    ws.addEventListener('message', (e: MessageEvent) => { queue.push(String(e.data)); wake?.(); });
    const next = async (): Promise<string> => {
      while (queue.length === 0) await new Promise<void>((r) => { wake = r; setTimeout(r, 5000); });
      return queue.shift()!;
    };
    ws.addEventListener('open', () => resolve({ ws, next }));
    ws.addEventListener('error', () => reject(new Error('websocket failed')));
  });
}

/** A self-signed certificate for `cn` written as where/name.crt + .key. */
function selfSigned(where: string, name: string, cn: string): void {
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', `subjectAltName=DNS:${cn}`, '-keyout', join(where, `${name}.key`), '-out', join(where, `${name}.crt`)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
}

interface Got { status: number; fingerprint: string; reused: boolean; cookie: string }

/** GET / over TLS with SNI `name` (none when undefined); which certificate answered, and whether the agent's socket was reused. */
function tlsGet(port: number, host: string, name: string | undefined, agent: Agent | false = false): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path: '/', headers: { host }, agent, rejectUnauthorized: false, ...(name ? { servername: name } : {}) }, (res) => {
      const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, fingerprint, reused: req.reusedSocket, cookie: String(res.headers['set-cookie'] ?? '') }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function reload(p: ProxyProc, token = adminToken(p), method = 'POST'): Promise<{ status: number; body: any }> {
  const r = await fetch(`${p.admin}/tls/reload`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: r.status, body: await r.json() };
}

beforeAll(async () => {
  mkdirSync(certs);
  up = await startUpstream('echo');
  wsUp = await wsUpstream();
});
afterAll(async () => {
  await up?.close();
  wsUp?.close();
  rmSync(dir, { recursive: true, force: true });
});

for (const workers of [1, 2]) {
  describe(`TLS reload (${workers} worker${workers > 1 ? 's' : ''})`, () => {
    let p: ProxyProc;
    let port = 0;
    const here = join(dir, `w${workers}`);
    const named = join(here, 'certs');

    beforeAll(async () => {
      mkdirSync(named, { recursive: true });
      selfSigned(here, 'default', 'default.test');
      selfSigned(named, 'shop.example.com', 'shop.example.com');
      selfSigned(named, 'ws.example.com', 'ws.example.com');
      port = await freePort();
      p = await startProxy(table([route('echo', ['shop.example.com', 'default.test'], [up.address], { affinity: true }), route('ws', ['ws.example.com'], [wsUp.address])]), [
        '--workers', String(workers), '--tls-listen', `127.0.0.1:${port}`,
        '--tls-cert', join(here, 'default.crt'), '--tls-key', join(here, 'default.key'), '--tls-dir', named,
      ]);
    }, 60_000);
    afterAll(async () => {
      await p?.stop();
    });

    it('SIGHUP: new connections get the renewed certificates; an open connection keeps working', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      // a WebSocket over TLS, by a server name's own router (--tls-dir) and by the default one
      const bySni = await openWss(port, 'ws.example.com', 'ws.example.com');
      const byDefault = await openWss(port, 'other.test', 'ws.example.com');
      expect(await bySni.next()).toBe('proto https');
      expect(await byDefault.next()).toBe('proto https');
      try {
        const before = await tlsGet(port, 'shop.example.com', 'shop.example.com', agent);
        const defBefore = await tlsGet(port, 'default.test', undefined);
        expect(before.status).toBe(200);

        // renewal: new pairs written over the old files (as certbot's deploy hook sees them)
        selfSigned(here, 'default', 'default.test');
        selfSigned(named, 'shop.example.com', 'shop.example.com');
        p.proc.kill('SIGHUP');
        await waitFor(() => p.logs().includes('TLS certificates reloaded'), 10_000);

        // several connections: with workers, each thread's listener must have the new ones
        for (let i = 0; i < 6; i++) {
          const shop = await tlsGet(port, 'shop.example.com', 'shop.example.com');
          expect(shop.status).toBe(200);
          expect(shop.fingerprint).not.toBe(before.fingerprint);
          const def = await tlsGet(port, 'default.test', undefined);
          expect(def.fingerprint).not.toBe(defBefore.fingerprint);
        }
        const again = await tlsGet(port, 'shop.example.com', 'shop.example.com', agent);
        expect(again).toMatchObject({ status: 200, reused: true, fingerprint: before.fingerprint });
        // the WebSockets opened before the reload still carry messages both ways
        bySni.ws.send('after the reload');
        expect(await bySni.next()).toBe('after the reload');
        byDefault.ws.send('me too');
        expect(await byDefault.next()).toBe('me too');
        expect(p.proc.exitCode).toBeNull();
      } finally {
        agent.destroy();
        bySni.ws.close();
        byDefault.ws.close();
      }
    });

    it('POST /tls/reload: a bad file is a 422 naming it, and the certificates in use stay', async () => {
      const now = await tlsGet(port, 'shop.example.com', 'shop.example.com');
      // a key that is not the certificate's
      copyFileSync(join(here, 'default.key'), join(named, 'shop.example.com.key'));
      const r = await reload(p);
      expect(r.status).toBe(422);
      expect(r.body.error.code).toBe('invalid_certificate');
      expect(r.body.error.message).toContain('shop.example.com.crt');
      expect((await tlsGet(port, 'shop.example.com', 'shop.example.com')).fingerprint).toBe(now.fingerprint);

      // mended: the reload goes through
      selfSigned(named, 'shop.example.com', 'shop.example.com');
      const ok = await reload(p);
      expect(ok).toMatchObject({ status: 200, body: { reloaded: true, certificates: 3 } });
      // uWS read private copies of what was checked: only the set in use is kept, owner-only
      const kept = readdirSync(join(p.dir, 'tls'));
      expect(kept).toHaveLength(1);
      for (const f of readdirSync(join(p.dir, 'tls', kept[0]))) expect(statSync(join(p.dir, 'tls', kept[0], f)).mode & 0o777).toBe(0o600);
      expect(statSync(join(p.dir, 'tls', kept[0])).mode & 0o777).toBe(0o700);
      const after = await tlsGet(port, 'shop.example.com', 'shop.example.com');
      expect(after.status).toBe(200);
      expect(after.fingerprint).not.toBe(now.fingerprint);
    });

    it('a session-affinity cookie handed out over TLS is Secure', async () => {
      expect((await tlsGet(port, 'shop.example.com', 'shop.example.com')).cookie).toBe('berth-affinity=echo-e0; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax; Secure');
    });

    it('reports when each certificate expires (/stats, /metrics) and warns when it is soon', async () => {
      const auth = { authorization: `Bearer ${adminToken(p)}` };
      const stats = await (await fetch(`${p.admin}/stats`, { headers: auth })).json() as { tls: { certificates: { name: string; notAfter: string }[] } };
      expect(stats.tls.certificates.map((c) => c.name)).toEqual(['default', 'shop.example.com', 'ws.example.com']);
      for (const c of stats.tls.certificates) {
        const days = (Date.parse(c.notAfter) - Date.now()) / 86_400_000;
        expect(days).toBeGreaterThan(1); // made with -days 2
        expect(days).toBeLessThan(3);
      }
      const metrics = await (await fetch(`${p.admin}/metrics`, { headers: auth })).text();
      expect(metrics).toMatch(/^berth_proxy_tls_certificate_expiry_seconds\{name="shop\.example\.com"\} \d{10}$/m);
      expect(p.logs()).toContain('TLS certificate expires within 14 days');
    });

    it('needs the admin token and POST', async () => {
      expect((await reload(p, '')).status).toBe(401);
      expect((await reload(p, adminToken(p), 'GET')).status).toBe(405);
    });
  });
}

describe('TLS reload without a TLS listener', () => {
  it('is a 404 on the admin listener, and SIGHUP does not stop the proxy', async () => {
    const p = await startProxy(table([route('echo', ['a.test'], [up.address])]));
    try {
      expect(await reload(p)).toMatchObject({ status: 404, body: { error: { code: 'no_tls' } } });
      p.proc.kill('SIGHUP');
      await waitFor(() => p.logs().includes('nothing to reload'), 5000);
      expect((await get(p, 'a.test', '/')).status).toBe(200);
    } finally {
      await p.stop();
    }
  });
});

describe('a reload on several threads is all or none (workers/pool.ts allOrNone)', () => {
  /** thread i serves what it last applied; `refuse` says which thread refuses which config */
  const threads = (n: number, refuse: (i: number, c: string) => boolean) => {
    const serving = Array.from({ length: n }, () => 'old');
    const apply = async (i: number, c: string) => {
      await new Promise((r) => setTimeout(r, Math.random() * 5));
      if (refuse(i, c)) return `thread ${i} refused ${c}`;
      serving[i] = c;
      return undefined;
    };
    return { serving, apply };
  };

  it('every thread takes the new config, or every thread serves the old one again', async () => {
    const ok = threads(4, () => false);
    expect(await allOrNone(4, ok.apply, 'new', 'old')).toBeNull();
    expect(ok.serving).toEqual(['new', 'new', 'new', 'new']);

    const one = threads(4, (i, c) => i === 2 && c === 'new');
    expect(await allOrNone(4, one.apply, 'new', 'old')).toBe('thread 2 refused new (every thread kept or went back to the certificates in use)');
    expect(one.serving).toEqual(['old', 'old', 'old', 'old']);
  });

  it('says so when a thread cannot go back', async () => {
    const stuck = threads(3, (i, c) => (i === 0 && c === 'new') || (i === 1 && c === 'old'));
    expect(await allOrNone(3, stuck.apply, 'new', 'old')).toMatch(/^thread 0 refused new; 1 of 3 threads could not go back/);
    expect(stuck.serving).toEqual(['old', 'new', 'old']);
  });
});
