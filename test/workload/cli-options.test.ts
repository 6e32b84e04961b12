/**
 * `berth load` option checks that must fail before a single request is sent (bench/workload/cli.ts),
 * and the one-line error the CLIs print for system errors (shared/cli/args.ts describeError).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadOptions, proxyFromControlPlane } from '../../bench/workload/cli.js';
import { UsageError, describeError } from '../../shared/cli/args.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-load-opts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const base = ['--url', 'http://127.0.0.1:9/'];

describe('berth load options', () => {
  it('--stages set the length and the first rate when --duration and --rps are left out', () => {
    const { options } = loadOptions([...base, '--pattern', 'step', '--stages', '1m:100,1m:200']);
    expect(options.duration_seconds).toBe(120);
    expect(options.rps).toBe(100);
  });

  it('a --duration shorter than the --stages is refused, not cut short silently', () => {
    expect(() => loadOptions([...base, '--pattern', 'step', '--stages', '1m:100,1m:200', '--duration', '30s'])).toThrow(UsageError);
    expect(loadOptions([...base, '--pattern', 'step', '--stages', '1m:100', '--duration', '90s']).options.duration_seconds).toBe(90);
  });

  it('--body @file: a device, a directory or a file over 1 MiB is refused before it is read', () => {
    expect(() => loadOptions([...base, '--rps', '10', '--body', '@/dev/zero'])).toThrow(/not a regular file/);
    expect(() => loadOptions([...base, '--rps', '10', '--body', `@${dir}`])).toThrow(/not a regular file/);
    const big = join(dir, 'big');
    writeFileSync(big, Buffer.alloc(1024 * 1024 + 1));
    expect(() => loadOptions([...base, '--rps', '10', '--body', `@${big}`])).toThrow(/at most/);
  });

  it('flag words, not API fields: a --remote run past the API\'s hour, a rate of 0 (from a walkthrough)', () => {
    expect(() => loadOptions(['--app', 'a.localhost', '--rps', '1', '--remote', '--duration', '2h'])).toThrow(/^--duration: a --remote run lasts at most 1h/);
    expect(loadOptions(['--app', 'a.localhost', '--rps', '1', '--remote', '--duration', '1h']).options.duration_seconds).toBe(3600);
    expect(loadOptions(['--app', 'a.localhost', '--rps', '1', '--duration', '2h']).options.duration_seconds).toBe(7200);
    expect(() => loadOptions([...base, '--rps', '0'])).toThrow(/^--rps "0" must be a number above 0, at most \d+$/);
  });

  it('--json / --html naming a directory is refused up front', () => {
    expect(() => loadOptions([...base, '--rps', '10', '--json', dir])).toThrow(/is a directory/);
    expect(() => loadOptions([...base, '--rps', '10', '--html', dir])).toThrow(/is a directory/);
  });
});

describe('describeError', () => {
  it('a system error is one line naming the path and the code, not a stack', () => {
    let err: unknown;
    try {
      writeFileSync(dir, 'x');
    } catch (e) {
      err = e;
    }
    const line = describeError(err);
    expect(line).toContain(dir);
    expect(line).toContain('EISDIR');
    expect(line).not.toContain('\n    at ');
  });

  it('malformed JSON from a server is named as such', () => {
    let err: unknown;
    try {
      JSON.parse('{nope');
    } catch (e) {
      err = e;
    }
    expect(describeError(err)).toMatch(/not valid JSON/);
  });
});

describe('berth load --app: which proxy', () => {
  const env = {} as NodeJS.ProcessEnv;
  it('asks the control plane only for --app without --proxy-url (or BERTH_PROXY_URL)', () => {
    expect(loadOptions(['--app', 'a.localhost', '--rps', '1'], env).askProxy).toBe(true);
    expect(loadOptions(['--app', 'a.localhost', '--rps', '1', '--proxy-url', 'http://127.0.0.1:9/'], env).askProxy).toBe(false);
    expect(loadOptions(['--app', 'a.localhost', '--rps', '1'], { BERTH_PROXY_URL: 'http://127.0.0.1:9/' }).askProxy).toBe(false);
    expect(loadOptions(['--app', 'a.localhost', '--rps', '1', '--remote'], env).askProxy).toBe(false);
    expect(loadOptions([...base, '--rps', '1'], env).askProxy).toBe(false);
  });

  it("follows the control plane's proxy_url; falls back to :8080 with a reason when it is missing, not http, or unreachable", async () => {
    let answer: unknown = { proxy_url: 'http://127.0.0.1:8380' };
    const server: Server = createServer((req, res) => {
      if (req.url !== '/api/info' || req.headers.authorization !== undefined) { res.writeHead(404).end(); return; }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(answer));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const warned: string[] = [];
      const warn = (l: string) => warned.push(l);
      expect(await proxyFromControlPlane(api, warn)).toBe('http://127.0.0.1:8380');
      expect(warned).toEqual([]);
      answer = { proxy_url: 'https://apps.example.com' };
      expect(await proxyFromControlPlane(api, warn)).toBe('http://127.0.0.1:8080');
      expect(warned.pop()).toMatch(/not plain http/);
      answer = { proxy_url: null };
      expect(await proxyFromControlPlane(api, warn)).toBe('http://127.0.0.1:8080');
      expect(warned.pop()).toMatch(/names no proxy URL/);
      // an answer may not aim the load at another host than the control plane's own
      answer = { proxy_url: 'http://victim.example:80' };
      expect(await proxyFromControlPlane(api, warn)).toBe('http://127.0.0.1:8080');
      expect(warned.pop()).toMatch(/is not on the API's machine \(127\.0\.0\.1\); .*--proxy-url http:\/\/victim\.example:80/);
      // loopback beside loopback is the same machine
      answer = { proxy_url: 'http://localhost:9090' };
      expect(await proxyFromControlPlane(api, warn)).toBe('http://localhost:9090');
    } finally {
      await new Promise((r) => server.close(r));
    }
    const warned: string[] = [];
    expect(await proxyFromControlPlane(api, (l) => warned.push(l))).toBe('http://127.0.0.1:8080');
    expect(warned[0]).toMatch(/could not ask/);
  });
});
