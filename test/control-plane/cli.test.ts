import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { freePort } from '../helpers/ports.js';
import { berthBin, spawnBerth, waitForOk, type Spawned } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';

/** `berth control-plane` as a real process with its embedded PostgreSQL. */
let data: { dir: string; cleanup(): Promise<void> };
const running: Spawned[] = [];
const env = { DATABASE_URL: '', BERTH_LOG_LEVEL: 'warn', BERTH_ENV: 'development', BERTH_JWT_SECRET: '' };

function isAlive(pid: number): boolean { try { process.kill(pid, 0); return true; } catch { return false; } }
async function postmasterPid(): Promise<number | undefined> {
  const f = join(data.dir, 'pg', 'postmaster.pid');
  return existsSync(f) ? Number((await readFile(f, 'utf8')).split('\n')[0]) : undefined;
}

async function start(): Promise<{ p: Spawned; url: string }> {
  const port = await freePort();
  const p = spawnBerth(['control-plane', '--listen', `127.0.0.1:${port}`, '--data-dir', data.dir], env);
  running.push(p);
  const url = `http://127.0.0.1:${port}`;
  await waitForOk(`${url}/readyz`, p, 60_000);
  return { p, url };
}

beforeAll(async () => {
  if (!existsSync(berthBin) || !existsSync(join(berthBin, '..', '..', 'dist', 'control-plane', 'cli.js'))) throw new Error('build first: npx tsc -p .');
  data = await tempDir();
});

afterAll(async () => {
  for (const p of running) if (p.child.exitCode === null) { p.child.kill('SIGKILL'); await p.exited; }
  const pid = await postmasterPid().catch(() => undefined);
  if (pid && isAlive(pid)) process.kill(pid, 'SIGINT');
  await new Promise((r) => setTimeout(r, 300));
  await data?.cleanup();
});

describe('berth control-plane', () => {
  it('--help prints usage and exits 0; unknown flags exit 2', async () => {
    const h = spawnBerth(['control-plane', '--help']);
    expect((await h.exited).code).toBe(0);
    expect(h.output()).toContain('Usage: berth control-plane');
    expect(h.output()).toContain('--data-dir');
    expect(h.output()).toContain('DATABASE_URL');
    const bad = spawnBerth(['control-plane', '--nope']);
    expect((await bad.exited).code).toBe(2);
    expect(bad.output()).toContain('unknown flag --nope');
  });

  it('runs on embedded PostgreSQL in the data dir, seeds the default user loudly, stops cleanly on SIGTERM', async () => {
    const { p, url } = await start();
    expect(existsSync(join(data.dir, 'pg', 'PG_VERSION'))).toBe(true);
    expect(p.output()).toMatch(/DEFAULT USER CREATED: example@gmail.com \/ example123/);
    const api = new Api(url);
    expect((await api.post('/api/auth/login', { email: 'example@gmail.com', password: 'example123' })).status).toBe(200);
    await api.signup('persist@example.com', 'persist-password');
    const pgPid = await postmasterPid();
    expect(pgPid && isAlive(pgPid)).toBeTruthy();
    p.child.kill('SIGTERM');
    const exit = await p.exited;
    expect(exit.code).toBe(0);
    expect(isAlive(pgPid!)).toBe(false);
  });

  it('keeps data across restarts, and recovers from a SIGKILL that left Postgres running', async () => {
    const first = await start();
    const api = new Api(first.url);
    const login = await api.post('/api/auth/login', { email: 'persist@example.com', password: 'persist-password' });
    expect(login.status).toBe(200);
    expect(first.p.output()).not.toMatch(/DEFAULT USER CREATED/);
    const orphan = await postmasterPid();
    first.p.child.kill('SIGKILL');
    await first.p.exited;
    expect(isAlive(orphan!)).toBe(true); // the postmaster outlives a killed parent
    const second = await start();
    expect((await new Api(second.url, login.body.token).get('/api/auth/me')).status).toBe(200);
    second.p.child.kill('SIGTERM');
    expect((await second.p.exited).code).toBe(0);
  });
});
