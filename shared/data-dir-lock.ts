import { readFileSync } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * One process per data directory and role: `DIR/<role>.lock` names the process that owns DIR
 * (its pid and, on Linux, its start time, so a pid the kernel handed out again after a crash does
 * not count as the owner). A second `berth up` on the same directory used to take the first one's
 * embedded Postgres for a leftover and stop it; now it stops itself, naming the owner.
 *
 * As PostgreSQL's postmaster.pid: created with O_EXCL; a lock whose owner is gone (a crash, a
 * kill -9) is removed and taken. Two processes starting at the same instant over a dead owner's
 * lock could both take it (the same window postmaster.pid has); a live owner is never taken
 * over. Written by hand: a pid file and a liveness check, no library needed.
 */
export interface DataDirLock {
  readonly file: string;
  /** Remove the lock if it is still this process's (idempotent). */
  release(): Promise<void>;
}

export class DataDirInUseError extends Error {
  constructor(readonly dir: string, readonly pid: number, role: string) {
    super(`the data directory ${dir} is in use by another berth ${role} (pid ${pid}${pid === process.pid ? ', this process' : ''}): stop it first, or give this one another data directory (--data-dir)`);
  }
}

/** Field 22 of /proc/PID/stat (clock ticks after boot the process started at), or '' off Linux. */
function startTime(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // (the command name in field 2 is in parentheses and may hold spaces)
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
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

/** Whether the process a lock's content names still runs (the same process, not a reused pid). */
function owner(content: string): number | null {
  const [p, start = ''] = content.trim().split(' ');
  const pid = Number(p);
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return null;
  const now = startTime(pid);
  return start === '' || now === '' || now === start ? pid : null;
}

export async function lockDataDir(dir: string, role: string): Promise<DataDirLock> {
  const file = join(dir, `${role}.lock`);
  const mine = `${process.pid} ${startTime(process.pid)}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      const h = await open(file, 'wx', 0o644);
      try { await h.writeFile(mine); } finally { await h.close(); }
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw e;
    }
    let content = '';
    try { content = await readFile(file, 'utf8'); } catch { continue; } // (released meanwhile)
    const pid = owner(content);
    // (an empty file: its owner is between creating and writing it, or died there)
    if (pid !== null) throw new DataDirInUseError(dir, pid, role.replace(/-/g, ' '));
    if (content === '' && attempt === 0) { await new Promise((r) => setTimeout(r, 100)); continue; }
    await unlink(file).catch(() => {});
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
