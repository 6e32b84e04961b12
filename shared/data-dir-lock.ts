import { readFileSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * One process per data directory and role: `DIR/<role>.lock` names the process that owns DIR —
 * its pid and, on Linux, its start time and the boot it started in, so a pid the kernel handed
 * out again after a crash or a reboot does not count as the owner. A second `berth up` on the
 * same directory used to take the first one's embedded Postgres for a leftover and stop it; now
 * it stops itself, naming the owner.
 *
 * As PostgreSQL's postmaster.pid: the lock is made whole beside its name and linked into place
 * (link(2) fails when the name exists, and the lock is never seen empty); a lock whose owner is
 * gone (a crash, a kill -9, a zombie) is removed and taken. Two processes starting at the same
 * instant over a dead owner's lock could both take it (the same window postmaster.pid has); a
 * live owner in this boot and pid namespace is never taken over. An owner in another pid
 * namespace (two containers sharing a volume) cannot be seen from here: its lock looks stale.
 * Written by hand: a pid file and a liveness check, no library needed.
 */
export interface DataDirLock {
  readonly file: string;
  /** Remove the lock if it is still this process's (idempotent). */
  release(): Promise<void>;
}

export class DataDirInUseError extends Error {
  constructor(readonly dir: string, readonly pid: number, role: string, file: string) {
    super(`the data directory ${dir} is in use by another berth ${role} (pid ${pid}${pid === process.pid ? ', this process' : ''}; ${file}): stop it first, or give this one another data directory (--data-dir)`);
  }
}

/** This boot's id (Linux), or ''. */
const BOOT_ID = (() => {
  try { return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(); } catch { return ''; }
})();

/** Fields 3 (state) and 22 (start, in clock ticks after boot) of /proc/PID/stat, or null off Linux. */
function procStat(pid: number): { state: string; start: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // (the command name in field 2 is in parentheses and may hold spaces)
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: f[0] ?? '', start: f[19] ?? '' };
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid of the process a lock's content names if it still runs (the same process: not a reused pid, not a zombie). */
function owner(content: string): number | null {
  const [p, start = '', boot = ''] = content.trim().split(' ');
  const pid = Number(p);
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return null;
  if (boot !== '' && BOOT_ID !== '' && boot !== BOOT_ID) return null;
  const now = procStat(pid);
  if (now === null) return pid; // (no /proc: the pid alone)
  if (now.state === 'Z' || now.state === 'X') return null;
  return start === '' || now.start === start ? pid : null;
}

export async function lockDataDir(dir: string, role: string): Promise<DataDirLock> {
  const file = join(dir, `${role}.lock`);
  const mine = `${process.pid} ${procStat(process.pid)?.start ?? ''} ${BOOT_ID}\n`;
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, mine, { mode: 0o644 });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(tmp, file);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw e;
      }
      let content: string;
      try { content = await readFile(file, 'utf8'); } catch { continue; } // (released meanwhile)
      const pid = owner(content);
      if (pid !== null) throw new DataDirInUseError(dir, pid, role.replace(/-/g, ' '), file);
      await unlink(file).catch(() => {});
    }
  } finally {
    await unlink(tmp).catch(() => {});
  }
  let released = false;
  return {
    file,
    async release() {
      if (released) return;
      released = true;
      const now = await readFile(file, 'utf8').catch(() => '');
      if (now === mine) await unlink(file).catch(() => {});
    },
  };
}
