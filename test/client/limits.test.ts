import { lstat, mkdir, readFile, symlink, chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { type BerthClient, ClientError } from '../../shared/client/client.js';
import { followBuild } from '../../shared/client/commands/deploy.js';
import { credentialsPath, readCredentials, saveLogin } from '../../shared/client/credentials.js';
import { readSse } from '../../shared/client/sse.js';
import { tempDir } from '../helpers/tmp.js';

/** The client holds bounded amounts of what a server sends, and writes its tokens only where it means to. */

const drain = async (body: Readable) => { const out = []; for await (const ev of readSse(body)) out.push(ev); return out; };

describe('readSse', () => {
  it('reads events; a line of more than 1 MiB without a newline is an error, not unbounded memory', async () => {
    expect(await drain(Readable.from(['event: log\ndata: {"a":1}\n\n: ping\n\n']))).toEqual([{ event: 'log', data: '{"a":1}' }]);
    async function* endless() { yield 'data: '; for (let i = 0; i < 40; i++) yield 'x'.repeat(64 * 1024); }
    await expect(drain(Readable.from(endless()))).rejects.toThrow(ClientError);
    await expect(drain(Readable.from(endless()))).rejects.toThrow(/longer than 1024 KiB/);
  });

  it('an event of many short data lines is bounded too', async () => {
    async function* many() { for (let i = 0; i < 100_000; i++) yield 'data: xxxxxxxxxxxxxxxxxxxx\n'; }
    await expect(drain(Readable.from(many()))).rejects.toThrow(/longer than 1024 KiB/);
  });
});

describe('berth deploy: the build log', () => {
  it('a line of more than 1 MiB without a newline stops the deploy with a clear message', async () => {
    const chunk = `event: log\ndata: ${JSON.stringify({ text: 'y'.repeat(400 * 1024) })}\n\n`;
    const client = {
      stream: async () => ({ body: Readable.from([chunk, chunk, chunk, chunk, 'event: end\ndata: {"status":"ready"}\n\n']) }),
      get: async () => ({ status: 'building' }),
    } as unknown as BerthClient;
    const out = { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream;
    await expect(followBuild(client, 9, out, new AbortController().signal, Date.now() + 10_000)).rejects.toThrow(/image 9 has a line longer than 1 MiB/);
  });
});

describe('credentials file', () => {
  it('is not written through a symlink planted at a predictable temp name', async () => {
    const t = await tempDir('berth-creds-');
    try {
      const env = { BERTH_CONFIG_DIR: join(t.dir, 'config') };
      await mkdir(env.BERTH_CONFIG_DIR, { recursive: true, mode: 0o700 });
      const victim = join(t.dir, 'victim');
      await writeFile(victim, 'precious\n');
      await symlink(victim, `${credentialsPath(env)}.${process.pid}.tmp`);
      await saveLogin('http://api.example', { token: 'berth_secret', created_at: 'now' }, env);
      expect(await readFile(victim, 'utf8')).toBe('precious\n');
      const st = await lstat(credentialsPath(env));
      expect(st.isFile()).toBe(true);
      expect(st.mode & 0o777).toBe(0o600);
      expect(JSON.parse(await readFile(credentialsPath(env), 'utf8')).apis['http://api.example'].token).toBe('berth_secret');
    } finally {
      await t.cleanup();
    }
  });

  it('reading warns when the directory or the file is open to other users', async () => {
    const t = await tempDir('berth-creds-');
    try {
      const env = { BERTH_CONFIG_DIR: join(t.dir, 'config') };
      await saveLogin('http://api.example', { token: 'berth_secret', created_at: 'now' }, env);
      const warnings: string[] = [];
      await readCredentials(env, (m) => warnings.push(m));
      expect(warnings).toEqual([]);
      await chmod(credentialsPath(env), 0o644);
      await readCredentials(env, (m) => warnings.push(m));
      expect(warnings[0]).toMatch(/credentials\.json is open to other users \(mode 0644\).*chmod 600/);
      await chmod(credentialsPath(env), 0o600);
      await chmod(env.BERTH_CONFIG_DIR, 0o755);
      await readCredentials(env, (m) => warnings.push(m));
      expect(warnings[1]).toMatch(/config is open to other users \(mode 0755\).*chmod 700/);
    } finally {
      await t.cleanup();
    }
  });
});
