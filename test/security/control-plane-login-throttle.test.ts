import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { BIN } from '../e2e/support.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { LoginThrottle, RateLimiter, addressKey, networkKey } from '../../control-plane/auth/rate-limit.js';
import { KNOWN_ADDRESSES_PER_ACCOUNT, SharedLoginLimits } from '../../control-plane/auth/shared-limits.js';
import { migrate } from '../../control-plane/db/migrate.js';
import { createPool } from '../../control-plane/db/pool.js';
import pgModule from 'pg';
import { DEVICE_TTL_SECONDS, DeviceCookies } from '../../control-plane/auth/device.js';
import { createUser } from '../../control-plane/auth/users.js';
import { MAX_HASHING, MAX_WAITING, hashingNow, inTurn } from '../../control-plane/auth/passwords.js';
import { Api } from '../helpers/api.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Login throttling slows an attacker without locking the owner out: failures are counted per
 * (account, source address) with growing delays (429 + Retry-After), forgotten after a success
 * or a quiet window, in bounded memory; a per-address limit across accounts stops credential
 * stuffing from one address. The owner's correct password from another address always works.
 *
 * Source addresses: the control plane listens on 127.0.0.1 and the tests connect from other
 * loopback addresses (127.0.0.0/8 is all loopback on Linux), so `req.ip` differs per "client".
 */
let pg: TestPostgres;
const stops: (() => Promise<void>)[] = [];

async function start(loginRateLimit: NonNullable<Parameters<typeof startControlPlane>[0]>['loginRateLimit'], databaseUrl?: string): Promise<ControlPlane> {
  const d = await tempDir();
  const cp = await startControlPlane({ port: 0, dataDir: d.dir, databaseUrl: databaseUrl ?? await pg.createDatabase(), quiet: true, seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', loginRateLimit });
  stops.push(async () => { await cp.close(); await d.cleanup(); });
  return cp;
}

interface LoginResult { status: number; retryAfter: number | undefined; body: any; setCookie: string[] }

/** POST /api/auth/login from a given local (source) address. */
function loginFrom(cp: ControlPlane, from: string, email: string, password: string, cookie?: string): Promise<LoginResult> {
  const url = new URL(cp.url);
  const payload = JSON.stringify({ email, password });
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: '/api/auth/login', method: 'POST', localAddress: from, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), connection: 'close', ...(cookie ? { cookie } : {}) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        const ra = res.headers['retry-after'];
        resolve({ status: res.statusCode ?? 0, retryAfter: ra === undefined ? undefined : Number(ra), body: text ? JSON.parse(text) : undefined, setCookie: res.headers['set-cookie'] ?? [] });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The password of the accounts `withOwner` makes. */
const PASSWORD = 'owner-password-1';

/** A control plane with these login limits and one account, `owner`, signed up with PASSWORD. */
async function withOwner(limits: Parameters<typeof start>[0], owner: string): Promise<ControlPlane> {
  const cp = await start(limits);
  await new Api(cp.url).signup(owner, PASSWORD);
  return cp;
}

beforeAll(async () => {
  pg = await startTestPostgres();
});

afterAll(async () => {
  for (const s of stops) await s().catch(() => {});
  await pg?.stop();
});

describe('per (account, address) backoff', () => {
  let cp: ControlPlane;
  const OWNER = 'owner@example.com';

  beforeAll(async () => {
    cp = await withOwner({ perAccountMax: 3, backoffBaseMs: 1000, backoffMaxMs: 2000, perAccountWindowMs: 60_000, perIpMax: 1000 }, OWNER);
  });

  it('an attacker is slowed with growing delays while the owner logs in from another address', async () => {
    const attacker = '127.0.0.2';
    for (let i = 0; i < 3; i++) expect((await loginFrom(cp, attacker, OWNER, 'guess-' + i)).status).toBe(401);
    let r = await loginFrom(cp, attacker, OWNER, 'guess-x');
    expect(r.status).toBe(429);
    expect(r.retryAfter).toBe(1);
    expect(r.body.error).toEqual({ code: 'too_many_requests', message: expect.stringMatching(/failed logins.*retry in 1s/), requestId: expect.any(String) });
    // throttled attempts are refused before the password is checked: even the right one, from there
    expect((await loginFrom(cp, attacker, OWNER, PASSWORD)).status).toBe(429);
    // the owner, elsewhere, is not locked out (and the email's case does not matter)
    const owner = await loginFrom(cp, '127.0.0.3', 'Owner@Example.com', PASSWORD);
    expect(owner.status).toBe(200);
    expect(owner.body.token).toEqual(expect.any(String));

    // the wait doubles with every further failure, up to the cap
    await sleep(1100);
    expect((await loginFrom(cp, attacker, OWNER, 'guess-4')).status).toBe(401);
    r = await loginFrom(cp, attacker, OWNER, 'guess-5');
    expect([r.status, r.retryAfter]).toEqual([429, 2]);
    await sleep(2100);
    expect((await loginFrom(cp, attacker, OWNER, 'guess-6')).status).toBe(401);
    r = await loginFrom(cp, attacker, OWNER, 'guess-7');
    expect([r.status, r.retryAfter]).toEqual([429, 2]); // capped at backoffMaxMs

    // still nothing for the owner's other address
    expect((await loginFrom(cp, '127.0.0.3', OWNER, PASSWORD)).status).toBe(200);
  });

  it('a success forgets the failures of that address', async () => {
    const from = '127.0.0.4';
    for (let i = 0; i < 2; i++) expect((await loginFrom(cp, from, OWNER, 'typo-' + i)).status).toBe(401);
    expect((await loginFrom(cp, from, OWNER, PASSWORD)).status).toBe(200);
    // counted afresh: three more free failures before the first delay
    for (let i = 0; i < 3; i++) expect((await loginFrom(cp, from, OWNER, 'typo-again-' + i)).status).toBe(401);
    expect((await loginFrom(cp, from, OWNER, PASSWORD)).status).toBe(429);
  });

  it('parallel guesses from one address cannot slip past the free failures', async () => {
    const codes = await Promise.all(Array.from({ length: 12 }, (_, i) => loginFrom(cp, '127.0.0.5', OWNER, 'parallel-' + i).then((r) => r.status)));
    expect(codes.filter((c) => c === 401).length).toBe(3);
    expect(codes.filter((c) => c === 429).length).toBe(9);
    expect((await loginFrom(cp, '127.0.0.6', OWNER, PASSWORD)).status).toBe(200);
  });

  it('unknown accounts are throttled the same way (no account enumeration by timing of 429s)', async () => {
    for (let i = 0; i < 3; i++) expect((await loginFrom(cp, '127.0.0.7', 'nobody@example.com', 'x-' + i)).status).toBe(401);
    expect((await loginFrom(cp, '127.0.0.7', 'nobody@example.com', 'x')).status).toBe(429);
  });
});

describe('forgotten after a quiet window', () => {
  it('failures older than the window (past their delay) no longer count', async () => {
    // (a 2 s window: the three logins after the wait must fall in one, and a password check on a
    // busy machine took long enough that a 300 ms one forgot the first of them)
    const cp = await start({ perAccountMax: 2, backoffBaseMs: 200, backoffMaxMs: 200, perAccountWindowMs: 2000, perIpMax: 1000 });
    await new Api(cp.url).signup('quiet@example.com', 'quiet-password');
    for (let i = 0; i < 2; i++) expect((await loginFrom(cp, '127.0.0.8', 'quiet@example.com', 'no-' + i)).status).toBe(401);
    expect((await loginFrom(cp, '127.0.0.8', 'quiet@example.com', 'no')).status).toBe(429);
    await sleep(2300); // 200 ms delay + 2 s window
    // two free failures again, then the first (short) delay
    for (let i = 0; i < 2; i++) expect((await loginFrom(cp, '127.0.0.8', 'quiet@example.com', 'later-' + i)).status).toBe(401);
    expect((await loginFrom(cp, '127.0.0.8', 'quiet@example.com', 'later')).status).toBe(429);
  });
});

describe('per address across accounts (credential stuffing)', () => {
  it('one address trying many accounts is stopped; the owners elsewhere are not', async () => {
    const cp = await start({ perIpMax: 4, perIpWindowMs: 60_000, perAccountMax: 5 });
    // (signups share the per-address budget on their own counter: create the accounts directly)
    for (let i = 0; i < 6; i++) await createUser(cp.db, `victim${i}@example.com`, `victim-password-${i}`, null);
    const stuffer = '127.0.0.9';
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) codes.push((await loginFrom(cp, stuffer, `victim${i}@example.com`, 'leaked-elsewhere')).status);
    expect(codes).toEqual([401, 401, 401, 401, 429, 429]);
    const r = await loginFrom(cp, stuffer, 'victim5@example.com', 'victim-password-5');
    expect(r.status).toBe(429);
    expect(r.retryAfter).toBeGreaterThan(0);
    for (let i = 0; i < 6; i++) expect((await loginFrom(cp, '127.0.0.10', `victim${i}@example.com`, `victim-password-${i}`)).status).toBe(200);
    // successes do not use up an address's budget
    for (let i = 0; i < 6; i++) expect((await loginFrom(cp, '127.0.0.11', `victim${i}@example.com`, `victim-password-${i}`)).status).toBe(200);
  });
});

describe('IPv6 networks', () => {
  it('a /48 as a whole gets eight times one address\'s failed logins, however many /64s it spreads them over', async () => {
    const d = await tempDir();
    const cp = await startControlPlane({
      port: 0, dataDir: d.dir, databaseUrl: await pg.createDatabase(), quiet: true, seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock',
      loginRateLimit: { perIpMax: 2, perIpWindowMs: 60_000, perAccountMax: 100 }, trustProxy: ['127.0.0.1'],
    });
    stops.push(async () => { await cp.close(); await d.cleanup(); });
    const from = async (client: string) => (await fetch(`${cp.url}/api/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': client },
      body: JSON.stringify({ email: 'someone@example.com', password: 'guess-guess' }),
    })).status;
    const codes: number[] = [];
    // eighteen /64s of one /48, one failure each: the first sixteen (8 × 2) are judged, then the network waits
    for (let i = 0; i < 18; i++) codes.push(await from(`2001:db8:7:${i}::1`));
    expect(codes).toEqual([...Array(16).fill(401), 429, 429]);
    // another /48 is not held back
    expect(await from('2001:db8:8:1::1')).toBe(401);
    expect(networkKey('2001:db8:7:5:aaaa::1')).toBe(networkKey('2001:0db8:0007:ffff::1'));
    expect(networkKey('192.0.2.1')).toBeNull();
  });
});

describe('one account guessed from many addresses', () => {
  it('is refused to clients that never signed in to it; the owner\'s browser (device cookie) and usual address are not', async () => {
    const OWNER = 'many@example.com';
    const OTHER = 'other@example.com';
    const cp = await withOwner({ perAccountMax: 5, perAccountUnknownMax: 4, perAccountUnknownWindowMs: 60_000, perIpMax: 1000 }, OWNER);
    await new Api(cp.url).signup(OTHER, PASSWORD);
    // the owner signs in from their usual address; the answer sets a device cookie for /api/auth
    const first = await loginFrom(cp, '127.0.2.1', OWNER, PASSWORD);
    expect(first.status).toBe(200);
    const set = first.setCookie.find((c) => c.startsWith('berth_device='))!;
    expect(set).toMatch(/Path=\/api\/auth/);
    expect(set).toMatch(/HttpOnly/);
    expect(set).toMatch(/SameSite=Strict/);
    expect(set).not.toContain('many');
    const device = set.split(';')[0];
    const otherDevice = (await loginFrom(cp, '127.0.2.2', OTHER, PASSWORD)).setCookie.find((c) => c.startsWith('berth_device='))!.split(';')[0];

    // a botnet: one guess from each of many addresses (the per-pair and per-address limits never bite)
    for (let i = 0; i < 4; i++) expect((await loginFrom(cp, `127.0.3.${i + 1}`, OWNER, `guess-${i}`)).status).toBe(401);
    const refused = await loginFrom(cp, '127.0.3.9', OWNER, PASSWORD);
    expect([refused.status, refused.body.error.code]).toEqual([429, 'too_many_requests']);
    expect(refused.body.error.message).toMatch(/never signed in to it; retry in \d+s/);
    expect(refused.retryAfter).toBeGreaterThan(0);
    // the owner: from the usual address, and from a new one with the browser's device cookie
    expect((await loginFrom(cp, '127.0.2.1', OWNER, PASSWORD)).status).toBe(200);
    expect((await loginFrom(cp, '127.0.4.1', OWNER, PASSWORD, device)).status).toBe(200);
    // neither a forged cookie nor one of another account helps
    const [, issued, nonce] = device.split('.');
    for (const cookie of [`berth_device=v1.${issued}.${nonce}.${'A'.repeat(43)}`, `berth_device=v1.${Number(issued) + 1}.${device.split('.').slice(2).join('.')}`, otherDevice, 'berth_device=garbage']) {
      expect((await loginFrom(cp, '127.0.4.2', OWNER, PASSWORD, cookie)).status, cookie).toBe(429);
    }
    // a cookie planted for a longer path (sent first) does not hide the owner's
    expect((await loginFrom(cp, '127.0.4.4', OWNER, PASSWORD, `berth_device=v1.1.AAAAAAAAAAAAAAAA.${'A'.repeat(43)}; ${device}`)).status).toBe(200);
    // the limit is the account's whatever the spelling of its email
    expect((await loginFrom(cp, '127.0.4.5', ' MANY@Example.com ', PASSWORD)).status).toBe(429);
    // other accounts are not affected
    expect((await loginFrom(cp, '127.0.4.3', OTHER, PASSWORD)).status).toBe(200);
  }, 60_000);

  it('control planes on one database count together, and one started afresh forgets neither the count nor the known addresses', async () => {
    const OWNER = 'shared@example.com';
    const url = await pg.createDatabase();
    const limits = { perAccountMax: 100, perAccountUnknownMax: 4, perAccountUnknownWindowMs: 60_000, perIpMax: 1000 };
    const a = await start(limits, url);
    await new Api(a.url).signup(OWNER, PASSWORD);
    expect((await loginFrom(a, '127.0.5.1', OWNER, PASSWORD)).status).toBe(200);
    const b = await start(limits, url);
    // a botnet spreads its guesses over both (two each: neither would refuse alone)
    for (let i = 0; i < 2; i++) {
      expect((await loginFrom(a, `127.0.6.${i + 1}`, OWNER, `guess-${i}`)).status).toBe(401);
      expect((await loginFrom(b, `127.0.7.${i + 1}`, OWNER, `guess-${i}`)).status).toBe(401);
    }
    for (const cp of [a, b]) expect((await loginFrom(cp, '127.0.6.9', OWNER, PASSWORD)).status).toBe(429);
    // the owner's address, which signed in on one, is known on the other
    expect((await loginFrom(b, '127.0.5.1', OWNER, PASSWORD)).status).toBe(200);
    // a control plane started afresh (a restart) still refuses the botnet, and still knows the owner
    await a.close();
    const c = await start(limits, url);
    expect((await loginFrom(c, '127.0.6.10', OWNER, PASSWORD)).status).toBe(429);
    expect((await loginFrom(c, '127.0.5.1', OWNER, PASSWORD)).status).toBe(200);
  }, 60_000);

  it('a database that turns read-only (a failover) or drops its connections makes a login 503 unavailable, not a 500; back, it signs in again', async () => {
    const OWNER = 'failover@example.com';
    const url = await pg.createDatabase();
    const cp = await start({ perAccountMax: 100, perAccountUnknownMax: 20, perIpMax: 1000 }, url);
    await new Api(cp.url).signup(OWNER, PASSWORD);
    const name = new URL(url).pathname.slice(1);
    const admin = new pgModule.Client({ connectionString: pg.url });
    await admin.connect();
    const readOnly = async (on: boolean) => {
      await admin.query(`ALTER DATABASE ${name} SET default_transaction_read_only = ${on ? 'on' : 'off'}`);
      // (the setting is read at connect: the control plane's connections are cut and made again)
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);
    };
    try {
      await readOnly(true);
      // from an address that never signed in: the login writes its count
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push(await loginFrom(cp, `127.0.8.${i + 1}`, OWNER, PASSWORD));
      for (const r of answers) expect([r.status, r.body.error.code, r.retryAfter]).toEqual([503, expect.stringMatching(/^(unavailable|busy)$/), expect.any(Number)]);
      expect(answers[2].body.error.code).toBe('unavailable');
      await readOnly(false);
      let again = await loginFrom(cp, '127.0.8.9', OWNER, PASSWORD);
      for (let i = 0; i < 5 && again.status === 503; i++) again = await loginFrom(cp, '127.0.8.9', OWNER, PASSWORD);
      expect(again.status).toBe(200);
    } finally {
      await admin.query(`ALTER DATABASE ${name} SET default_transaction_read_only = off`).catch(() => {});
      await admin.end();
    }
  }, 60_000);

  it('a device cookie that keeps failing is no longer a pass (a leaked one does not open the account to a botnet)', async () => {
    const OWNER = 'leak@example.com';
    const cp = await withOwner({ perAccountMax: 3, perAccountUnknownMax: 2, perAccountUnknownWindowMs: 60_000, perIpMax: 1000 }, OWNER);
    const device = (await loginFrom(cp, '127.0.9.1', OWNER, PASSWORD)).setCookie.find((c) => c.startsWith('berth_device='))!.split(';')[0];
    // the cookie, from many addresses, guessing: the free failures of one pair each time
    for (let i = 0; i < 3; i++) expect((await loginFrom(cp, `127.0.10.${i + 1}`, OWNER, `guess-${i}`, device)).status).toBe(401);
    for (let i = 0; i < 2; i++) expect((await loginFrom(cp, `127.0.11.${i + 1}`, OWNER, `guess-${i}`)).status).toBe(401);
    // the account's limit on unknown clients is reached, and the cookie counts as unknown now
    expect((await loginFrom(cp, '127.0.12.1', OWNER, PASSWORD, device)).status).toBe(429);
    // the owner's usual address still signs in
    expect((await loginFrom(cp, '127.0.9.1', OWNER, PASSWORD)).status).toBe(200);
  }, 60_000);

  it('made-up emails refused busy cannot push an account\'s count out of the table', async () => {
    // a table of 50 keys: before, each of 200 sign-ins refused 503 left its email in it
    const OWNER = 'evict@example.com';
    const cp = await withOwner({ perAccountMax: 100, perAccountUnknownMax: 3, perAccountUnknownWindowMs: 60_000, perIpMax: 1000, maxTracked: 50 }, OWNER);
    for (let i = 0; i < 3; i++) expect((await loginFrom(cp, `127.0.13.${i + 1}`, OWNER, `guess-${i}`)).status).toBe(401);
    expect((await loginFrom(cp, '127.0.13.9', OWNER, 'guess-x')).status).toBe(429);
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const held = Array.from({ length: MAX_HASHING + MAX_WAITING }, () => inTurn(() => gate));
    try {
      for (let i = 0; i < 200; i++) expect((await loginFrom(cp, `127.0.14.${(i % 250) + 1}`, `made-up-${i}@example.com`, 'x')).status).toBe(503);
    } finally {
      release();
      await Promise.allSettled(held);
    }
    expect((await loginFrom(cp, '127.0.13.10', OWNER, 'guess-y')).status).toBe(429);
  }, 60_000);

  it('a new address that signs in becomes known: the owner guessing wrong there is not counted against the account', async () => {
    const OWNER = 'typo@example.com';
    const cp = await withOwner({ perAccountMax: 10, perAccountUnknownMax: 2, perAccountUnknownWindowMs: 60_000, perIpMax: 1000 }, OWNER);
    expect((await loginFrom(cp, '127.0.5.1', OWNER, PASSWORD)).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await loginFrom(cp, '127.0.5.1', OWNER, `typo-${i}`)).status).toBe(401);
    // unknown clients still have their whole allowance
    for (let i = 0; i < 2; i++) expect((await loginFrom(cp, `127.0.6.${i + 1}`, OWNER, `guess-${i}`)).status).toBe(401);
    expect((await loginFrom(cp, '127.0.6.9', OWNER, 'guess-x')).status).toBe(429);
  }, 60_000);
});

describe('berth login keeps its device cookie', () => {
  /** `berth login` as a user runs it, the password on stdin. */
  function cli(api: string, email: string, password: string, configDir: string, args = ['login', '--api', api, '--email', email]): Promise<{ code: number; err: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, BERTH_CONFIG_DIR: configDir, BERTH_TOKEN: '' }, stdio: ['pipe', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? -1, err }));
      child.stdin.end(password + '\n');
    });
  }

  it('and sends it back: a machine that signed in before is not locked out by guessing from elsewhere', async () => {
    // addresses are forgotten at once here, so only the cookie can tell this machine
    const OWNER = 'cli@example.com';
    const cp = await withOwner({ perAccountMax: 100, perAccountUnknownMax: 2, perAccountUnknownWindowMs: 60_000, perIpMax: 1000, knownForMs: 0 }, OWNER);
    const dir = await tempDir();
    stops.push(() => dir.cleanup());
    const first = await cli(cp.url, OWNER, PASSWORD, dir.dir);
    expect(first.code, first.err).toBe(0);
    const file = join(dir.dir, 'credentials.json');
    expect(JSON.parse(await readFile(file, 'utf8')).devices[cp.url]).toMatch(/^v1\.\d+\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{43}$/);
    for (let i = 0; i < 2; i++) expect((await loginFrom(cp, `127.0.15.${i + 1}`, OWNER, `guess-${i}`)).status).toBe(401);
    const again = await cli(cp.url, OWNER, PASSWORD, dir.dir);
    expect(again.code, again.err).toBe(0);
    // logging out forgets the token, not the device
    const out = await cli(cp.url, '', '', dir.dir, ['logout', '--api', cp.url]);
    expect(out.code, out.err).toBe(0);
    expect((await cli(cp.url, OWNER, PASSWORD, dir.dir)).code).toBe(0);
    // without the cookie the same machine is refused
    const creds = JSON.parse(await readFile(file, 'utf8'));
    delete creds.devices[cp.url];
    await writeFile(file, JSON.stringify(creds), { mode: 0o600 });
    const without = await cli(cp.url, OWNER, PASSWORD, dir.dir);
    expect(without.code).not.toBe(0);
    expect(without.err).toMatch(/never signed in to it/);
  }, 60_000);
});

describe('a login refused 503 busy was never judged', () => {
  it('is not counted: neither against the pair nor the address', async () => {
    // Every hashing slot and queue place is held (MAX_HASHING running + MAX_WAITING queued) until
    // the test lets go, so each sign-in below is 503 busy whatever the machine's speed. They are
    // sent one after another, more than the address limit (75): were they counted, this address
    // would be over it afterwards, and each of those accounts past its one free failure.
    const cp = await start({ perAccountMax: 1, backoffBaseMs: 60_000, backoffMaxMs: 60_000, perAccountWindowMs: 60_000, perIpMax: 75, perIpWindowMs: 60_000 });
    const from = '127.0.0.9';
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const held = Array.from({ length: MAX_HASHING + MAX_WAITING }, () => inTurn(() => gate));
    try {
      expect(hashingNow()).toEqual({ running: MAX_HASHING, waiting: MAX_WAITING });
      const emails = Array.from({ length: 80 }, (_, i) => `nobody-${i}@example.com`);
      for (const e of emails) {
        const r = await loginFrom(cp, from, e, 'guess');
        expect([r.status, r.body.error.code, r.retryAfter]).toEqual([503, 'busy', 1]);
      }
      release();
      await Promise.all(held);
      expect(hashingNow()).toEqual({ running: 0, waiting: 0 });
      // an account refused busy tries again: judged now (401), not held back as if it had failed
      expect((await loginFrom(cp, from, emails[0], 'guess')).status).toBe(401);
      // once judged, it is held back (its one free failure is spent)
      expect((await loginFrom(cp, from, emails[0], 'guess')).status).toBe(429);
      expect((await loginFrom(cp, from, emails[1], 'guess')).status).toBe(401);
    } finally {
      release();
      await Promise.allSettled(held);
    }
  }, 60_000);
});

describe('device cookies and known addresses (units)', () => {
  it('a device cookie is known for its account only, unchanged, and for a year', () => {
    let now = Date.UTC(2026, 0, 1);
    const d = new DeviceCookies(new TextEncoder().encode('k'.repeat(48)), () => now);
    const v = d.issue('a@example.com');
    expect(v).not.toContain('example');
    const nonce = v.split('.')[2];
    expect(d.known([v], 'a@example.com')).toBe(nonce);
    expect(d.known([v], 'b@example.com')).toBeNull();
    expect(d.known(['garbage', v], 'a@example.com')).toBe(nonce);
    const [, issued, , mac] = v.split('.');
    expect(d.known([`v1.${issued}.${'B'.repeat(16)}.${mac}`], 'a@example.com')).toBeNull();
    expect(d.known([`v1.${Number(issued) - 1}.${nonce}.${mac}`], 'a@example.com')).toBeNull();
    // another key (another platform, or the session key rotated): unknown
    expect(new DeviceCookies(new TextEncoder().encode('j'.repeat(48)), () => now).known([v], 'a@example.com')).toBeNull();
    now += DEVICE_TTL_SECONDS * 1000 - 1000;
    expect(d.known([v], 'a@example.com')).toBe(nonce);
    now += 2000;
    expect(d.known([v], 'a@example.com')).toBeNull();
  });

  it('in the database: an account remembers its last addresses only, for knownForMs; failures per key in fixed windows, taken back, swept', async () => {
    const db = createPool(await pg.createDatabase());
    stops.push(() => db.end());
    await migrate(db);
    const k = new SharedLoginLimits(db, { max: 2, windowMs: 400, knownForMs: 60_000 });
    for (let i = 0; i < KNOWN_ADDRESSES_PER_ACCOUNT + 5; i++) await k.remember('a', `10.0.0.${i}`);
    expect(await k.knows('a', '10.0.0.0')).toBe(false);
    expect(await k.knows('a', `10.0.0.${KNOWN_ADDRESSES_PER_ACCOUNT + 4}`)).toBe(true);
    expect(await k.knows('b', `10.0.0.${KNOWN_ADDRESSES_PER_ACCOUNT + 4}`)).toBe(false);
    expect((await db.query("SELECT 1 FROM login_known_addresses WHERE account = 'a'")).rowCount).toBe(KNOWN_ADDRESSES_PER_ACCOUNT);
    // an IPv6 client by its /64
    await k.remember('a', '2001:db8:1:2::1');
    expect(await k.knows('a', '2001:db8:1:2:ffff::9')).toBe(true);
    // knownForMs: past it, not known
    const brief = new SharedLoginLimits(db, { max: 2, windowMs: 400, knownForMs: 1 });
    await sleep(20);
    expect(await brief.knows('a', `10.0.0.${KNOWN_ADDRESSES_PER_ACCOUNT + 4}`)).toBe(false);
    // failures: max per window; at the limit nothing more is counted; a failure taken back frees one
    expect([await k.take('u:1'), await k.take('u:1')]).toEqual([0, 0]);
    expect(await k.take('u:1')).toBe(1);
    expect(await k.take('u:2')).toBe(0);
    expect((await db.query<{ failures: number }>("SELECT failures FROM login_limits WHERE key = 'u:1'")).rows[0].failures).toBe(2);
    await k.giveBack('u:1');
    expect(await k.take('u:1')).toBe(0);
    expect(await k.take('u:1')).toBeGreaterThan(0);
    // the window ends: counted afresh
    await sleep(450);
    expect(await k.take('u:1')).toBe(0);
    // a key given back to zero goes
    expect(await k.take('u:3')).toBe(0);
    await k.giveBack('u:3');
    expect((await db.query("SELECT 1 FROM login_limits WHERE key = 'u:3'")).rowCount).toBe(0);
    // the sweep forgets windows and addresses older than this control plane's settings, and never
    // younger than the defaults (15 min, 30 days: another control plane on the database may use them)
    await sleep(450);
    await brief.sweep();
    expect((await db.query('SELECT key FROM login_limits')).rowCount).toBe(2);
    expect((await db.query('SELECT 1 FROM login_known_addresses')).rowCount).toBe(KNOWN_ADDRESSES_PER_ACCOUNT);
    await db.query("UPDATE login_limits SET window_start = window_start - interval '16 minutes' WHERE key = 'u:1'");
    await db.query("UPDATE login_known_addresses SET last_at = last_at - interval '31 days' WHERE address <> '10.0.0.24'");
    await brief.sweep();
    expect((await db.query<{ key: string }>('SELECT key FROM login_limits')).rows.map((r) => r.key)).toEqual(['u:2']);
    expect((await db.query<{ address: string }>('SELECT address FROM login_known_addresses')).rows.map((r) => r.address)).toEqual(['10.0.0.24']);
  });
});

describe('bounded memory and address keys (units)', () => {
  it('the throttle and the per-address counters keep at most maxKeys entries', () => {
    const th = new LoginThrottle({ freeFailures: 5, baseDelayMs: 1000, maxDelayMs: 60_000, forgetAfterMs: 60_000, maxKeys: 100 });
    const rl = new RateLimiter(30, 60_000, Date.now, 100);
    for (let i = 0; i < 10_000; i++) { th.fail(`user${i}@example.com`, `10.0.${i >> 8}.${i & 255}`); rl.hit(`10.0.${i >> 8}.${i & 255}`); }
    expect(th.size).toBeLessThanOrEqual(100);
    expect(rl.size).toBeLessThanOrEqual(100);
  });

  it('delays grow exponentially from the base up to the cap', () => {
    const th = new LoginThrottle({ freeFailures: 5, baseDelayMs: 1000, maxDelayMs: 15 * 60_000, forgetAfterMs: 60_000, maxKeys: 10 });
    expect([0, 4, 5, 6, 7, 10, 20, 1000].map((n) => th.delayMs(n))).toEqual([0, 0, 1000, 2000, 4000, 32_000, 15 * 60_000, 15 * 60_000]);
  });

  it('IPv6 clients are counted by /64, IPv4-mapped addresses as IPv4', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe(addressKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'));
    expect(addressKey('2001:db8:1:2::1')).not.toBe(addressKey('2001:db8:1:3::1'));
    expect(addressKey('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(addressKey('192.0.2.1')).toBe('192.0.2.1');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });
});
