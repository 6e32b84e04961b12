import { spawn } from 'node:child_process';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CredentialsFileError, credentialsPath, readCredentials, saveLogin } from '../../shared/client/credentials.js';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { tempDir } from '../helpers/tmp.js';
import { BIN, built } from '../e2e/support.js';

/**
 * A credentials file that is there but cannot be used is an error naming it (exit 1), never
 * "not logged in" followed by a `berth login` that silently throws its logins away; a missing
 * file is still "not logged in"; `berth login` replaces a broken file and says so; written 0600.
 */

const quiet = () => {};

async function configWith(content: string | null): Promise<{ env: { BERTH_CONFIG_DIR: string }; path: string; cleanup(): Promise<void> }> {
  const t = await tempDir('berth-creds-');
  const env = { BERTH_CONFIG_DIR: join(t.dir, 'config') };
  await mkdir(env.BERTH_CONFIG_DIR, { mode: 0o700 });
  if (content !== null) await writeFile(credentialsPath(env), content, { mode: 0o600 });
  return { env, path: credentialsPath(env), cleanup: t.cleanup };
}

describe('readCredentials', () => {
  it('device cookies that are not strings of cookie characters are dropped, the logins kept', async () => {
    const c = await configWith(JSON.stringify({ apis: { 'http://a': { token: 'berth_x' } }, devices: { 'http://a': 'v1.1.a.b', 'http://b': 'x\r\nSet-Cookie: y', 'http://c': 7 } }));
    try {
      expect(await readCredentials(c.env, quiet)).toEqual({ apis: { 'http://a': { token: 'berth_x' } }, devices: { 'http://a': 'v1.1.a.b' } });
    } finally {
      await c.cleanup();
    }
    const d = await configWith(JSON.stringify({ apis: { 'http://a': { token: 'berth_x' } }, devices: ['x'] }));
    try {
      expect(await readCredentials(d.env, quiet)).toEqual({ apis: { 'http://a': { token: 'berth_x' } } });
    } finally {
      await d.cleanup();
    }
  });

  it("a file from before the devices map: the login's own device cookie is still read (the map's wins)", async () => {
    const c = await configWith(JSON.stringify({ apis: { 'http://a': { token: 'berth_x', device: 'v1.old.a' }, 'http://b': { token: 'berth_y', device: 'v1.old.b' }, 'http://c': { token: 'berth_z', device: 'x\r\ny' } }, devices: { 'http://b': 'v1.new.b' } }));
    try {
      expect((await readCredentials(c.env, quiet)).devices).toEqual({ 'http://a': 'v1.old.a', 'http://b': 'v1.new.b' });
    } finally {
      await c.cleanup();
    }
  });

  it('a missing file is no logins', async () => {
    const c = await configWith(null);
    try {
      expect(await readCredentials(c.env, quiet)).toEqual({ apis: {} });
    } finally {
      await c.cleanup();
    }
  });

  it.each([
    ['not JSON (cut off in a token), without quoting the token', '{"apis": {"http://a": {"token": "berth_secret_abc', /is not valid JSON: unterminated string at line 1 column 50;/],
    ['not JSON (cut off)', '{"apis": ', /is not valid JSON: it ends too early \(cut off\?\);/],
    ['not JSON (a comma too many, edited by hand)', '{\n  "apis": {\n    "http://a": {"token": "berth_secret_abc"},\n  }\n}\n', /is not valid JSON: expected double-quoted property name at line 4 column 3;/],
    ['not JSON (a token after it), without quoting it', '{"apis": {}} berth_secret_abc', /is not valid JSON: unexpected non-whitespace character after JSON at line 1 column 14;/],
    ['not JSON at all, without quoting it (V8 would)', 'berth_secret_abc', /is not valid JSON: unexpected character;/],
    ['empty', '', /is empty/],
    ['a JSON array', '["berth_secret_abc"]', /is not a berth credentials file \(not a JSON object\)/],
    ['without "apis"', '{"current": "http://a"}', /is not a berth credentials file \("apis" is missing or not an object\)/],
    ['a login without a token', '{"apis": {"http://a": {"email": "a@example.com"}}}', /is not a berth credentials file \(the login for "http:\/\/a" has no "token" string\)/],
    ['"current" not a string', '{"current": 1, "apis": {}}', /"current" is not a string/],
  ])('a file that is %s is an error naming the file and what to do', async (_what, content, problem) => {
    const c = await configWith(content);
    try {
      const e = await readCredentials(c.env, quiet).then(() => undefined, (err: unknown) => err);
      expect(e).toBeInstanceOf(CredentialsFileError);
      const message = (e as Error).message;
      expect(message.startsWith(`${c.path} `)).toBe(true);
      expect(message).toMatch(problem);
      expect(message).toMatch(/; fix or delete it, or run `berth login` \(which replaces it\)$/);
      expect(message).not.toContain('\n');
      expect(message).not.toContain('secret');
    } finally {
      await c.cleanup();
    }
  });

  it('a file that cannot be read (a directory in its place) is an error too', async () => {
    const c = await configWith(null);
    try {
      await mkdir(c.path);
      await expect(readCredentials(c.env, quiet)).rejects.toThrow(/credentials\.json cannot be read \(EISDIR\)/);
    } finally {
      await c.cleanup();
    }
  });

  it('saveLogin replaces a broken file (mode 0600) and says what was wrong with it; a good one is kept and extended', async () => {
    const c = await configWith('not json');
    try {
      await chmod(c.path, 0o644);
      const r = await saveLogin('http://a', { token: 'berth_a', created_at: 'now' }, c.env);
      expect(r).toEqual({ path: c.path, replaced: 'is not valid JSON: unexpected character' });
      expect((await stat(c.path)).mode & 0o777).toBe(0o600);
      const again = await saveLogin('http://b', { token: 'berth_b', created_at: 'now' }, c.env);
      expect(again).toEqual({ path: c.path });
      expect(await readCredentials(c.env, quiet)).toEqual({
        current: 'http://b', apis: { 'http://a': { token: 'berth_a', created_at: 'now' }, 'http://b': { token: 'berth_b', created_at: 'now' } },
      });
      expect((await stat(c.path)).mode & 0o777).toBe(0o600);
    } finally {
      await c.cleanup();
    }
  });
});

interface Run { code: number | null; out: string; err: string }

function berth(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, BERTH_TOKEN: '', BERTH_API: '', NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

describe.skipIf(!built())('the berth CLI with a broken credentials file', () => {
  let t: TestControlPlane;
  let token: string;

  beforeAll(async () => {
    t = await startTestControlPlane();
    token = (await new Api(t.cp.url).signup('creds-cli@example.com')).token!;
  }, 120_000);

  afterAll(async () => {
    await t?.close();
  });

  it('commands that need it exit 1 with one line naming the file; berth login replaces it and says so; then they work', async () => {
    const c = await configWith('{"apis": {"http://x": {"token": "berth_old"}');
    try {
      const env = { BERTH_CONFIG_DIR: c.env.BERTH_CONFIG_DIR };
      for (const args of [['apps', '--api', t.cp.url], ['containers'], ['logout', '--api', t.cp.url]]) {
        const r = await berth(args, env);
        expect(r.code, `${args.join(' ')}: ${r.err}`).toBe(1);
        expect(r.err).toBe(`berth ${args[0]}: ${c.path} is not valid JSON: expected ',' or '}' after property value at line 1 column 45; fix or delete it, or run \`berth login\` (which replaces it)\n`);
      }
      // BERTH_TOKEN and an API given: the file is not needed
      const withToken = await berth(['apps', '--api', t.cp.url], { ...env, BERTH_TOKEN: token });
      expect(withToken.code, withToken.err).toBe(0);
      expect(await readFile(c.path, 'utf8')).toBe('{"apis": {"http://x": {"token": "berth_old"}'); // untouched so far

      const login = await berth(['login', '--api', t.cp.url, '--token', token], env);
      expect(login.code, login.err).toBe(0);
      expect(login.err).toContain(`berth login: warning: ${c.path} is not valid JSON: expected ',' or '}' after property value at line 1 column 45; replaced it with a new file holding this login only\n`);
      expect(login.out).toContain('Logged in to');
      expect((await stat(c.path)).mode & 0o777).toBe(0o600);
      const apps = await berth(['apps'], env);
      expect(apps.code, apps.err).toBe(0);
      expect(apps.err).toBe('');
    } finally {
      await c.cleanup();
    }
  });

  it('a missing file is still "not logged in" (exit 3)', async () => {
    const c = await configWith(null);
    try {
      const r = await berth(['apps', '--api', t.cp.url], { BERTH_CONFIG_DIR: c.env.BERTH_CONFIG_DIR });
      expect(r.code).toBe(3);
      expect(r.err).toMatch(/not logged in to/);
    } finally {
      await c.cleanup();
    }
  });
});
