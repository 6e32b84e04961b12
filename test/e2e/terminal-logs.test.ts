import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Api } from '../helpers/api.js';
import { freePort } from '../helpers/ports.js';
import { tempDir } from '../helpers/tmp.js';
import { BIN, built, sleep, waitFor } from './support.js';

/**
 * Terminal manners of `berth up`: on a terminal, pino-pretty one-liners (no JSON) and one line per
 * API request; piped, JSON lines. Either way the proxy's reports to the control plane (every
 * second while busy, every 5 s idle) are not logged at info.
 */

const running: { child: ChildProcess; cleanup(): Promise<void> }[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) {
    if (r.child.exitCode === null) {
      r.child.kill('SIGTERM');
      await new Promise((res) => r.child.once('exit', res));
    }
    await r.cleanup();
  }
});

async function startUp(onTerminal: boolean): Promise<{ out: () => string; api: number }> {
  if (!built()) throw new Error('dist/ is missing: run `npx tsc -p .` (npm test builds first)');
  const dir = await tempDir('berth-tty-');
  const [api, px, admin] = [await freePort(), await freePort(), await freePort()];
  const args = ['up', '--api-listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${px}`, '--admin-listen', `127.0.0.1:${admin}`, '--data-dir', `${dir.dir}/data`];
  const env = { ...process.env, BERTH_LOG_LEVEL: 'info', BERTH_LOG_FORMAT: '', BERTH_ENV: 'development', BERTH_PROXY_TOKEN: '', BERTH_AUTOSCALE: 'off' };
  // `script` gives the child a pseudo-terminal; `exec` so that SIGTERM reaches berth itself
  const child = onTerminal
    ? spawn('script', ['-qfec', `exec ${process.execPath} ${BIN} ${args.join(' ')}`, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  running.push({ child, cleanup: dir.cleanup });
  await waitFor('berth is up', async () => out.includes('berth is up') || (child.exitCode !== null ? Promise.reject(new Error(out)) : false), 90_000, 100);
  return { out: () => out, api };
}

/** Until the control plane has had a report from the proxy (its log line, if any, written). */
async function reportArrived(api: number): Promise<void> {
  const user = await new Api(`http://127.0.0.1:${api}`).signup(`tty-${randomBytes(3).toString('hex')}@example.com`);
  await waitFor('a proxy report', async () => ((await user.get('/v1/proxies')).body.proxies as unknown[]).length > 0, 15_000, 100);
  await sleep(300);
}

it('on a terminal: pretty one-liners, one line per API request, no proxy report lines', async () => {
  const s = await startUp(true);
  await fetch(`http://127.0.0.1:${s.api}/api/info`);
  await fetch(`http://127.0.0.1:${s.api}/api/nothing-here`);
  await reportArrived(s.api);
  const out = s.out();
  expect(out).toMatch(/\[\d\d:\d\d:\d\d\] .*INFO.*control-plane: control plane listening/);
  expect(out).toMatch(/GET \/api\/info → 200 \(\d+ ms\)/);
  expect(out).toMatch(/GET \/api\/nothing-here → 404/);
  expect(out).not.toMatch(/^\{"level":/m);
  expect(out).not.toContain('incoming request');
  expect(out).not.toContain('/v1/proxy/report');
  expect(out).not.toContain('FastifyDeprecation');
});

it('piped: JSON lines, and the proxy reports are not logged at info', async () => {
  const s = await startUp(false);
  await fetch(`http://127.0.0.1:${s.api}/api/info`);
  await reportArrived(s.api);
  const lines = s.out().split('\n').filter((l) => l.startsWith('{'));
  expect(lines.length).toBeGreaterThan(5);
  const parsed = lines.map((l) => JSON.parse(l) as { level: number; msg: string; req?: { url?: string } });
  expect(parsed.some((l) => l.msg === 'incoming request' && l.req?.url === '/api/info')).toBe(true); // JSON mode keeps Fastify's request logs
  expect(parsed.filter((l) => l.level < 40 && l.req?.url?.startsWith('/v1/proxy/'))).toEqual([]);
  expect(parsed.some((l) => l.msg === 'proxy subscribed to route updates')).toBe(true); // once per connection: kept
  expect(s.out()).not.toContain('\x1b[');
});
