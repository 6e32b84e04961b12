/**
 * `berth load` as a user runs it (the real process, built in dist/): JSON and HTML output,
 * --app through a proxy URL with the app's Host, --fail-on exit codes, and clear usage errors.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnBerth } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';

let server: Server;
let url: string;
const hosts: string[] = [];
const bodies: string[] = [];
const auths: string[] = [];
let tmp: { dir: string; cleanup(): Promise<void> };

beforeAll(async () => {
  tmp = await tempDir('berth-load-');
  server = createServer((req, res) => {
    hosts.push(req.headers.host ?? '');
    if (req.headers.authorization !== undefined) auths.push(`${req.headers.authorization}|${req.headers.cookie}|${req.headers['x-api-key']}`);
    let b = '';
    req.on('data', (c) => { b += c; });
    req.on('end', () => { bodies.push(b); res.end('ok'); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await tmp.cleanup();
});

async function load(args: string[], env: Record<string, string> = {}) {
  const p = spawnBerth(['load', ...args], env);
  const { code } = await p.exited;
  return { code, out: p.output() };
}

describe('berth load', () => {
  it('--url: runs the schedule, prints a summary, writes JSON and a self-contained HTML report', async () => {
    const json = join(tmp.dir, 'r.json');
    const html = join(tmp.dir, 'r.html');
    const before = hosts.length;
    const r = await load(['--url', `${url}/hello`, '--rps', '200', '--duration', '2s', '--json', json, '--html', html]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/requests\s+400 of 400 scheduled/);
    expect(r.out).toMatch(/latency\s+p50 /);
    // not a TTY: plain progress lines, no carriage returns
    expect(r.out).not.toContain('\r');
    const { config, metrics } = JSON.parse(await readFile(json, 'utf8'));
    expect(config.pattern).toBe('constant');
    expect(metrics.total_requests).toBe(400);
    expect(hosts.length - before).toBe(400);
    expect(metrics.series.length).toBeGreaterThanOrEqual(2);
    const page = await readFile(html, 'utf8');
    expect(page).toContain('<svg id="rate"');
    // nothing is loaded from anywhere: no script, no links or sources, no CSS imports
    expect(page).not.toMatch(/<script|<link|\b(src|href)\s*=|@import|url\(/i);
  });

  it('--app sends through the proxy URL with the app as Host; --body @file and repeated --header', async () => {
    const bodyFile = join(tmp.dir, 'body.txt');
    await writeFile(bodyFile, 'payload');
    const before = hosts.length;
    const r = await load(['--app', 'Shop.Localhost', '--rps', '50', '--duration', '1s', '--method', 'POST', '--body', `@${bodyFile}`,
      '-H', 'x-a: 1', '--header', 'x-b: 2'], { BERTH_PROXY_URL: url });
    expect(r.code, r.out).toBe(0);
    expect(hosts.slice(before).length).toBe(50);
    expect(new Set(hosts.slice(before))).toEqual(new Set(['shop.localhost']));
    expect(bodies.slice(-1)[0]).toBe('payload');
  });

  it('--header credentials are sent as given, and written as "[redacted]" in the JSON and HTML reports', async () => {
    const json = join(tmp.dir, 'h.json');
    const html = join(tmp.dir, 'h.html');
    const before = auths.length;
    const r = await load(['--url', `${url}/h`, '--rps', '20', '--duration', '1s', '-H', 'Authorization: Bearer cli-s3cret-1', '-H', 'Cookie: sid=cli-s3cret-2',
      '-H', 'X-Api-Key: cli-s3cret-3', '-H', 'X-Trace: shown', '--json', json, '--html', html]);
    expect(r.code, r.out).toBe(0);
    expect(auths.slice(before)).toContain('Bearer cli-s3cret-1|sid=cli-s3cret-2|cli-s3cret-3');
    const { config } = JSON.parse(await readFile(json, 'utf8'));
    expect(config.headers).toEqual({ Authorization: '[redacted]', Cookie: '[redacted]', 'X-Api-Key': '[redacted]', 'X-Trace': 'shown' });
    for (const text of [await readFile(json, 'utf8'), await readFile(html, 'utf8'), r.out]) expect(text).not.toContain('cli-s3cret');
  });

  it('--fail-on: a condition that holds exits 1 and says which; one that does not exits 0', async () => {
    const bad = await load(['--url', url, '--rps', '50', '--duration', '1s', '--fail-on', 'p50>0ms,error_rate>50%']);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/FAIL p50>0ms/);
    expect(bad.out).not.toMatch(/FAIL error_rate/);
    const good = await load(['--url', url, '--rps', '50', '--duration', '1s', '--fail-on', 'p99>30s,dropped>0']);
    expect(good.code, good.out).toBe(0);
    expect(good.out).toContain('passed: no --fail-on condition held (');
  });

  it('a target that refuses every request exits 1', async () => {
    const r = await load(['--url', 'http://127.0.0.1:1/', '--rps', '20', '--duration', '1s']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/ECONNREFUSED/);
    expect(r.out).toMatch(/no request succeeded/);
  });

  it.each([
    [[], /exactly one of --app/],
    [['--url', 'http://x/', '--app', 'a.b', '--rps', '1'], /exactly one of --app/],
    [['--url', 'http://127.0.0.1:1/'], /--rps N is required/],
    [['--url', 'http://127.0.0.1:1/', '--rps', 'abc'], /--rps "abc" must be/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '0'], /--rps "0" must be/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--duration', '5x'], /not a duration/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--duration', '48h'], /--duration must be between/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--pattern', 'sawtooth'], /--pattern must be one of/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--pattern', 'ramp'], /needs ramp_to_rps/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--pattern', 'step', '--stages', '10s'], /DURATION:RPS/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--header', 'novalue'], /must be "Name: value"/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--header', 'x-a: b\r\nx: y'], /control characters/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--fail-on', 'p99 is bad'], /--fail-on/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--body', '@/nonexistent/file'], /--body/],
    [['--url', 'https://127.0.0.1:1/', '--rps', '10'], /only http:\/\//],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--connections', '1.5'], /--connections/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--bogus', '1'], /unknown flag --bogus/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--quiet=yes'], /--quiet takes no value/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--json', '/nonexistent-dir/r.json'], /--json .*cannot write/],
    [['--url', 'http://127.0.0.1:1/', '--rps', '10', '--html', '/nonexistent-dir/r.html'], /--html .*cannot write/],
    [['--remote', 'shop.localhost', '--rps', '10'], /unexpected argument "shop.localhost"/],
  ])('usage error %j exits 2 with a message', async (args, message) => {
    const r = await load(args as string[]);
    expect(r.code, r.out).toBe(2);
    expect(r.out).toMatch(message);
  });

  it('--help lists the flags', async () => {
    const r = await load(['--help']);
    expect(r.code).toBe(0);
    for (const f of ['--app', '--url', '--rps', '--duration', '--pattern', '--ramp-to', '--connections', '--fail-on', '--html', '--json']) expect(r.out).toContain(f);
  });
});
