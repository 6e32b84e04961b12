import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataDirInUseError, lockDataDir } from '../../shared/data-dir-lock.js';
import { tempDir } from '../helpers/tmp.js';

/** A process that lives until killed, and its /proc start time. */
async function sleeper() {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  await once(child, 'spawn');
  const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
  const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  return { child, start };
}

describe('one process per data directory', () => {
  let t: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => { t = await tempDir('berth-lock-'); });
  afterAll(async () => { await t.cleanup(); });

  it('a second lock is refused while the first is held, naming its pid; released, it is taken again', async () => {
    const a = await lockDataDir(t.dir, 'control-plane');
    expect(readFileSync(a.file, 'utf8')).toMatch(new RegExp(`^${process.pid} \\d+ [0-9a-f-]{36}\\n$`));
    const err = await lockDataDir(t.dir, 'control-plane').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataDirInUseError);
    expect((err as Error).message).toBe(`the data directory ${t.dir} is in use by another berth control plane (pid ${process.pid}, this process; ${a.file}): stop it first, or give this one another data directory (--data-dir)`);
    // another role has a lock of its own
    const p = await lockDataDir(t.dir, 'proxy');
    await a.release();
    await a.release();
    expect(existsSync(a.file)).toBe(false);
    const b = await lockDataDir(t.dir, 'control-plane');
    await b.release();
    await p.release();
  });

  it('a lock whose process is gone (a crash) is taken; one whose pid now names another process (same pid, another start) is taken too', async () => {
    const file = join(t.dir, 'control-plane.lock');
    const gone = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    await once(gone, 'exit');
    writeFileSync(file, `${gone.pid} 123\n`);
    const a = await lockDataDir(t.dir, 'control-plane');
    await a.release();

    const s = await sleeper();
    try {
      writeFileSync(file, `${s.child.pid} ${Number(s.start) - 1}\n`);
      const b = await lockDataDir(t.dir, 'control-plane');
      expect(readFileSync(file, 'utf8')).toMatch(new RegExp(`^${process.pid} `));
      await b.release();
      // a live owner is never taken over, and its lock is not removed by another's release
      writeFileSync(file, `${s.child.pid} ${s.start}\n`);
      const err = await lockDataDir(t.dir, 'control-plane').catch((e: Error) => e);
      expect((err as Error).message).toContain(`(pid ${s.child.pid}; ${file})`);
      await b.release();
      expect(readFileSync(file, 'utf8')).toBe(`${s.child.pid} ${s.start}\n`);
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  it('a lock of a live pid from another boot, or of a zombie, is taken', async () => {
    const file = join(t.dir, 'control-plane.lock');
    const s = await sleeper();
    try {
      writeFileSync(file, `${s.child.pid} ${s.start} 00000000-0000-0000-0000-000000000000\n`);
      const a = await lockDataDir(t.dir, 'control-plane');
      await a.release();
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      writeFileSync(file, `${s.child.pid} ${s.start} ${boot}\n`);
      await expect(lockDataDir(t.dir, 'control-plane')).rejects.toThrow(`(pid ${s.child.pid}; ${file})`);
    } finally {
      s.child.kill('SIGKILL');
    }
    // a child that exited under a parent that never reaps it: a zombie, which kill(pid, 0) still finds
    // (python: a shell may reap its finished background job before it execs)
    const parent = spawn('python3', ['-c', 'import os, time\npid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid, flush=True)\ntime.sleep(60)'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const [out] = await once(parent.stdout!, 'data') as [Buffer];
      const zombie = Number(String(out).trim());
      await expect.poll(() => readFileSync(`/proc/${zombie}/stat`, 'utf8').split(') ')[1]?.[0]).toBe('Z');
      writeFileSync(file, `${zombie}\n`);
      const z = await lockDataDir(t.dir, 'control-plane');
      await z.release();
    } finally {
      parent.kill('SIGKILL');
    }
  });

  it('garbage is taken', async () => {
    const file = join(t.dir, 'proxy.lock');
    for (const content of ['', 'not a pid\n', '-1 0\n', '0\n']) {
      writeFileSync(file, content);
      const l = await lockDataDir(t.dir, 'proxy');
      await l.release();
      expect(existsSync(file), JSON.stringify(content)).toBe(false);
    }
  });
});
