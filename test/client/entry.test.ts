/**
 * bin/berth.js as a user runs it (its shebang, `./bin/berth.js` or npm's link): Node 20 itself
 * reads `--env-file` anywhere on its command line and exits 9 on a missing file; its first two
 * lines run Node with `--`, which leaves the flag to berth: a usage error of its own.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'berth.js');
const dir = mkdtempSync(join(tmpdir(), 'berth-entry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(args: string[]) {
  const child = spawn(BIN, args, { env: { ...process.env, BERTH_TOKEN: 'x', BERTH_API: 'http://127.0.0.1:9' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const [code] = await once(child, 'exit');
  return { code: code as number, err };
}

it('deploy --env-file with a missing file or a directory is berth\'s usage error (exit 2), not Node\'s exit 9', async () => {
  for (const [file, why] of [[join(dir, 'missing.env'), 'no such file'], [dir, 'not a regular file']]) {
    for (const args of [['--env-file', file], [`--env-file=${file}`]]) {
      const r = await run(['deploy', dir, '--host', 'a.localhost', ...args]);
      expect([r.code, r.err.split('\n')[0]], args.join(' ')).toEqual([2, `berth deploy: --env-file ${file}: ${why}`]);
    }
  }
});

it('deploy --host that no app may have is refused before anything is packed, in the API\'s words (exit 2)', async () => {
  for (const [host, why] of [
    ['localhost', 'is the loopback name; a name under it like app.localhost works for local use'],
    ['127.0.0.1', 'is an IP address; give a DNS name'],
    ['a---b.localhost', 'has "---" in its first label, which is reserved for revision tag URLs ({tag}---{app_hostname})'],
    ['intranet', 'has a single label; give a fully qualified name like app.example.com'],
  ]) {
    const r = await run(['deploy', dir, '--host', host]);
    expect([r.code, r.err.split('\n')[0]], host).toEqual([2, `berth deploy: --host "${host}" ${why}`]);
  }
});

it('a reader that goes away (`berth … | head`) ends the CLI quietly, not with an EPIPE stack trace', async () => {
  // stdout is a pipe closed before the CLI writes to it
  const child = spawn(BIN, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.destroy();
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const [code] = await once(child, 'exit');
  expect([code, err]).toEqual([0, '']);
});
