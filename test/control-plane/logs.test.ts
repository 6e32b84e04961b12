import { request, type IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from '../../control-plane/app.js';
import { appLogConfig, createContainerRuntime } from '../../control-plane/runtime/containers.js';
import type { Runtime } from '../../control-plane/runtime/docker.js';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { streamLimits } from '../../control-plane/http/stream-limits.js';

/**
 * App logs without Docker: the daemon's log endpoint is a fake (modem.dial answers a multiplexed
 * stream made here), so what the control plane pulls from Docker, how much it holds and what it
 * answers can be measured. Caps on streams are lowered through the environment (3 per user, 5 in
 * all), and a reader is disconnected after 3 s without reading.
 */
let t: TestControlPlane;
let cp: ControlPlane;
let alice: Api;
let bob: Api;
let aliceId: number;
// (every test client is 127.0.0.1: the per-address cap is set out of these tests' way)
const env = { BERTH_MAX_STREAMS_PER_USER: '3', BERTH_MAX_STREAMS: '5', BERTH_MAX_STREAMS_PER_ADDRESS: '100', BERTH_LOG_STALL_MS: '3000' };

/** What each Docker log request asked for, and how many bytes the control plane pulled from it. */
const dialed: { options: Record<string, unknown>; pulled: number; body: Readable }[] = [];
/** Log content per Docker id: bytes of lines to serve (non-follow); a follow never ends. */
const logs = new Map<string, number>();

const frame = (text: string) => {
  const b = Buffer.from(text);
  const h = Buffer.alloc(8);
  h[0] = 1;
  h.writeUInt32BE(b.length, 4);
  return Buffer.concat([h, b]);
};

function fakeLog(dockerId: string, options: Record<string, unknown>) {
  const d = { options, pulled: 0, body: undefined as unknown as Readable };
  const total = logs.get(dockerId) ?? 0;
  let n = 0;
  d.body = new Readable({
    read() {
      if (options.follow) return; // nothing new, until closed
      if (d.pulled >= total) { this.push(null); return; }
      let s = '';
      while (s.length < 60_000) { n++; s += `2026-01-01T00:00:${String(n % 60).padStart(2, '0')}.${String(n).padStart(9, '0')}Z ${dockerId} line ${n} ${'x'.repeat(100)}\n`; }
      const f = frame(s);
      d.pulled += f.length;
      this.push(f);
    },
  });
  dialed.push(d);
  return d.body;
}

beforeAll(async () => {
  Object.assign(process.env, env);
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  cp = t.cp;
  const modem = cp.app.runtime.docker.modem as unknown as { dial: (o: { path: string; options: Record<string, unknown> }, cb: (e: Error | null, d: unknown) => void) => void };
  modem.dial = (o, cb) => {
    const id = decodeURIComponent(/\/containers\/([^/]+)\/logs/.exec(o.path)![1]);
    const body = fakeLog(id, o.options);
    setImmediate(() => cb(null, body));
  };
  alice = await new Api(cp.url).signup('alice-logs@example.com');
  aliceId = (await alice.get('/api/auth/me')).body.user.id;
  bob = await new Api(cp.url).signup('bob-logs@example.com');
}, 60_000);
afterAll(async () => {
  for (const k of Object.keys(env)) delete process.env[k];
  await t?.close();
});

async function container(host: string, dockerId: string, bytes: number): Promise<number> {
  const { rows: [img] } = await cp.db.query<{ id: number }>('SELECT id FROM images WHERE app_hostname = $1 LIMIT 1', [host]);
  const imageId = img ? img.id : await insertReadyImage(cp, aliceId, host, 5);
  const { rows: [c] } = await cp.db.query<{ id: number }>(
    `INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, docker_id)
     VALUES ($1, $2, $3, 'running', 'healthy', 8080, 'running', $3) RETURNING id`, [aliceId, imageId, dockerId]);
  logs.set(dockerId, bytes);
  return Number(c.id);
}

/** A GET whose body is not read (until `read()`): the client is as slow as can be. */
function slowGet(path: string, token: string): Promise<{ res: IncomingMessage; close(): void }> {
  const u = new URL(cp.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, headers: { authorization: `Bearer ${token}` } }, (res) => {
      res.pause();
      resolve({ res, close: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('app logs: another tenant', () => {
  it("bob gets 404 for alice's container and app logs, and nothing is read from Docker", async () => {
    const id = await container('private-logs.example.com', 'private1', 1000);
    const before = dialed.length;
    for (const path of [`/api/containers/${id}/logs`, '/api/apps/private-logs.example.com/logs', '/api/apps/PRIVATE-LOGS.example.com./logs']) {
      const r = await bob.get(path);
      expect(r.status, path).toBe(404);
      expect(r.text, path).not.toContain('private1');
    }
    expect(dialed.length).toBe(before);
    expect((await alice.get(`/api/containers/${id}/logs`)).status).toBe(200);
  });
});

describe('app logs: bounded reads', () => {
  it('a container read defaults to tail 1000; tail above 10000 or "all" is 400', async () => {
    const id = await container('tail.example.com', 'tail1', 1000);
    const before = dialed.length;
    const r = await alice.get(`/api/containers/${id}/logs`);
    expect(r.status).toBe(200);
    expect(dialed[before].options.tail).toBe(1000);
    for (const q of ['tail=all', 'tail=10001']) expect((await alice.get(`/api/containers/${id}/logs?${q}`)).status, q).toBe(400);
    expect((await alice.get(`/api/containers/${id}/logs?tail=10000`)).status).toBe(200);
  });

  it('a client that does not read pauses the Docker stream: the control plane holds a bounded amount', async () => {
    const id = await container('slow.example.com', 'slow1', 64 * 1024 * 1024);
    const before = dialed.length;
    const c = await slowGet(`/api/containers/${id}/logs`, alice.token!);
    await sleep(1500);
    const pulled = dialed[before].pulled;
    c.close();
    expect(pulled).toBeGreaterThan(0);
    expect(pulled).toBeLessThan(16 * 1024 * 1024);
  });

  it('a client that leaves lines unread for BERTH_LOG_STALL_MS is disconnected, and its stream slot is freed', async () => {
    const id = await container('stall.example.com', 'stall1', 64 * 1024 * 1024);
    const limits = streamLimits(cp.app);
    const before = dialed.length;
    const c = await slowGet(`/api/containers/${id}/logs`, alice.token!);
    try {
      expect(c.res.statusCode).toBe(200);
      expect(limits.count(aliceId)).toBe(1);
      // (the paused client would not see the FIN before reading: watch the server's side)
      const t0 = Date.now();
      while (limits.count(aliceId) > 0 && Date.now() - t0 < 10_000) await sleep(100);
      const waited = Date.now() - t0;
      expect(limits.count(aliceId)).toBe(0);
      expect(waited).toBeGreaterThan(2000);
      // the Docker stream it held is closed, having given a bounded amount
      expect(dialed[before].body.destroyed).toBe(true);
      expect(dialed[before].pulled).toBeLessThan(16 * 1024 * 1024);
    } finally {
      c.close();
    }
  });

  it("an app's merged backlog is at most 2 MiB, and the output says older lines were skipped", async () => {
    await container('merge.example.com', 'merge1', 3 * 1024 * 1024);
    await container('merge.example.com', 'merge2', 3 * 1024 * 1024);
    const r = await alice.get('/api/apps/merge.example.com/logs');
    expect(r.status).toBe(200);
    expect(r.text.length).toBeLessThan(2.5 * 1024 * 1024);
    expect(r.text.slice(0, 200)).toMatch(/^berth: \d+ older lines skipped/);
    // the newest lines of both instances are kept
    expect(/\[\d+\] merge1 line \d+ x+\n/.test(r.text.slice(-100_000)), 'merge1').toBe(true);
    expect(/\[\d+\] merge2 line \d+ x+\n/.test(r.text.slice(-100_000)), 'merge2').toBe(true);
  });

  it('plain-text logs are nosniff; an absurd since is a 400 before any 200', async () => {
    const id = await container('since.example.com', 'since1', 1000);
    const ok = await alice.get(`/api/containers/${id}/logs?since=10m`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('x-content-type-options')).toBe('nosniff');
    for (const q of ['since=9999999d', 'since=99999999999', 'since=3000-01-01T00:00:00Z', 'since=0000-01-01T00:00:00Z']) {
      const r = await alice.get(`/api/containers/${id}/logs?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body.error.code).toBe('invalid_request');
    }
    // one parser with the metrics (http/time-query.ts): the same messages on both routes
    const bad: [string, string][] = [
      ['abc', 'query.since "abc" is not a duration back from now (30s, 10m, 2h, 1d), unix seconds or an RFC 3339 time (2026-11-30T18:00:00Z)'],
      ['99999999999h', 'query.since "99999999999h" reaches back more than ten years'],
      ['1969-12-31T23:59:59Z', 'query.since "1969-12-31T23:59:59Z" is out of range (a time from 1970 to 9999)'],
      ['2026-02-30', 'query.since "2026-02-30" is not a date that exists (month 01-12, day within the month, hours 00-23, minutes and seconds 00-59)'],
      ['3000-01-01T00:00:00Z', 'query.since "3000-01-01T00:00:00Z" is in the future (at most 24 h ahead)'],
    ];
    for (const [since, message] of bad) {
      for (const path of [`/api/containers/${id}/logs`, '/api/apps/since.example.com/logs']) {
        const r = await alice.get(`${path}?since=${encodeURIComponent(since)}`);
        expect(r.status, `${path} ${since}`).toBe(400);
        expect(r.body.error.message, since).toBe(message);
      }
    }
    for (const since of ['2h', '1764525600', '2026-11-30T18:00:00+01:00', '2026-11-30 18:00', '2026-11-30']) {
      expect((await alice.get(`/api/containers/${id}/logs?since=${encodeURIComponent(since)}`)).status, since).toBe(200);
    }
  });
});

describe('follow with since', () => {
  it('follows from when the backlog was read, not from since again (tail=0&since=2h would send two hours)', async () => {
    const id = await container('followsince.example.com', 'fsince1', 100);
    const before = dialed.length;
    const t0 = Date.now() / 1000;
    const f = await slowGet(`/api/containers/${id}/logs?follow=1&tail=0&since=2h`, alice.token!);
    try {
      expect(f.res.statusCode).toBe(200);
      for (let i = 0; i < 50 && !dialed.slice(before).some((d) => d.options.follow); i++) await sleep(20);
      const backlog = dialed.slice(before).find((d) => !d.options.follow)!;
      const follow = dialed.slice(before).find((d) => d.options.follow)!;
      // the backlog reads from since; the follow from now
      expect(Number(backlog.options.since)).toBeLessThan(t0 - 7000);
      expect(Number(follow.options.since)).toBeGreaterThanOrEqual(Math.floor(t0) - 1);
    } finally {
      f.close();
    }
  });
});

describe('a follow of an app', () => {
  it('ends when the app is deleted (it polled for good, holding a stream slot)', async () => {
    const host = 'gone-follow.example.com';
    await insertReadyImage(cp, aliceId, host, 1);
    const u = new URL(cp.url);
    const text = await new Promise<string>((resolve, reject) => {
      const req = request({ host: u.hostname, port: u.port, path: `/api/apps/${host}/logs?follow=1`, headers: { authorization: `Bearer ${alice.token}`, accept: 'text/event-stream' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { body += c; });
        res.on('end', () => resolve(body));
        // the app goes once the follow is under way
        setTimeout(() => { void cp.db.query('DELETE FROM images WHERE app_hostname = $1', [host]); }, 300);
      });
      req.on('error', reject);
      setTimeout(() => { req.destroy(); resolve('(still open after 10 s)'); }, 10_000).unref();
      req.end();
    });
    expect(text).toMatch(/event: end\ndata: \{"status":"app_deleted"\}/);
  });
});

describe('live streams are capped per user and in all', () => {
  it('past 3 follows of one user: 429; a closed follow frees its place; workload live streams count too', async () => {
    const id = await container('follow.example.com', 'follow1', 100);
    const follows = [];
    for (let i = 0; i < 3; i++) follows.push(await slowGet(`/api/containers/${id}/logs?follow=1`, alice.token!));
    for (const f of follows) expect(f.res.statusCode).toBe(200);
    const over = await alice.get(`/api/containers/${id}/logs?follow=1`);
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe('too_many_streams');
    expect((await alice.get('/api/apps/follow.example.com/logs?follow=1')).status).toBe(429);
    // a plain read is one too: it holds a backlog and Docker streams while its client reads
    const plain = await alice.get(`/api/containers/${id}/logs`);
    expect(plain.status).toBe(429);
    expect(plain.body.error.message).toMatch(/open log read streams/);

    const { rows: [w] } = await cp.db.query<{ id: number }>(`INSERT INTO workloads (user_id, status, config) VALUES ($1, 'completed', '{}') RETURNING id`, [aliceId]);
    expect((await alice.get(`/api/workloads/${w.id}/live`)).status).toBe(429);

    follows.pop()!.close();
    let again: { res: IncomingMessage; close(): void } | undefined;
    for (let i = 0; i < 50 && !again; i++) {
      const f = await slowGet(`/api/containers/${id}/logs?follow=1`, alice.token!);
      if (f.res.statusCode === 200) again = f; else { f.close(); await sleep(50); }
    }
    expect(again).toBeDefined();
    follows.push(again!);

    // the global cap (5): bob gets two, then 429 even though his own count is low
    const { rows: [bobImg] } = await cp.db.query<{ id: number }>('SELECT id FROM users WHERE email = $1', ['bob-logs@example.com']);
    const bobImage = await insertReadyImage(cp, Number(bobImg.id), 'bob.example.com', 1);
    const { rows: [bc] } = await cp.db.query<{ id: number }>(
      `INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, docker_id)
       VALUES ($1, $2, 'bob1', 'running', 'healthy', 8080, 'running', 'bob1') RETURNING id`, [bobImg.id, bobImage]);
    for (let i = 0; i < 2; i++) follows.push(await slowGet(`/api/containers/${bc.id}/logs?follow=1`, bob.token!));
    const full = await bob.get(`/api/containers/${bc.id}/logs?follow=1`);
    expect(full.status).toBe(429);
    expect(full.body.error.message).toMatch(/the control plane has 5 open streams/);
    for (const f of follows) f.close();
  });
});

describe('app follows share one look for new instances', () => {
  it('three followers of an app: one query per interval, not three; a new instance reaches each', async () => {
    await container('shared.example.com', 'shared1', 100);
    let queries = 0;
    const db = cp.db as unknown as { query: (...a: unknown[]) => Promise<unknown> };
    const query = db.query;
    db.query = function (this: unknown, ...a: unknown[]) {
      if (typeof a[0] === 'string' && a[0].includes('c.docker_id IS NOT NULL')) queries++;
      return query.apply(this, a);
    };
    const follows: { res: IncomingMessage; close(): void }[] = [];
    try {
      for (let i = 0; i < 50 && follows.length < 3; i++) {
        const f = await slowGet('/api/apps/shared.example.com/logs?follow=1', alice.token!);
        if (f.res.statusCode === 200) follows.push(f); else { f.close(); await sleep(100); } // earlier tests' follows still closing
      }
      expect(follows).toHaveLength(3);
      const base = queries;
      const before = dialed.length;
      await container('shared.example.com', 'shared2', 100);
      await sleep(4_500); // two intervals
      expect(queries - base).toBeGreaterThanOrEqual(1);
      expect(queries - base).toBeLessThanOrEqual(3);
      // every follower attached the new instance (a follow stream each)
      expect(dialed.slice(before).filter((d) => d.options.follow).length).toBe(3);
    } finally {
      db.query = query;
      for (const f of follows) f.close();
    }
  });
});

describe('app containers are created with a bounded Docker log', () => {
  it('LogConfig json-file, max-size 10m × 3 files by default, from the environment otherwise', async () => {
    let spec: { HostConfig?: { LogConfig?: unknown } } | undefined;
    const log = { child: () => log, warn() {}, info() {}, debug() {}, error() {} };
    const fake = {
      docker: { createContainer: async (s: typeof spec) => { spec = s; return { id: 'abc' }; } },
      ensureNetworks: async () => {},
      networks: { app: 'berth-apps' },
    } as unknown as Runtime;
    const rt = createContainerRuntime(fake, log as never);
    await rt.create({ name: 'n', image: 'i', labels: {}, env: {}, containerPort: 8080, publishHost: '127.0.0.1', pidsLimit: 100 });
    expect(spec?.HostConfig?.LogConfig).toEqual({ Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } });
    expect(appLogConfig({ BERTH_APP_LOG_MAX_SIZE: '50M', BERTH_APP_LOG_MAX_FILE: '5' })).toEqual({ Type: 'json-file', Config: { 'max-size': '50m', 'max-file': '5' } });
    expect(() => appLogConfig({ BERTH_APP_LOG_MAX_SIZE: 'lots' })).toThrow(/BERTH_APP_LOG_MAX_SIZE/);
  });
});
