import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../control-plane/db/embedded.js';
import { migrate } from '../../control-plane/db/migrate.js';
import { createPool } from '../../control-plane/db/pool.js';
import { tempDir } from './tmp.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** a directory with an initialised, stopped Postgres cluster (`pg/`) and its password file: startTestPostgres copies it instead of running initdb */
    pgTemplate: string;
    /** a database in that cluster with every migration applied: createDatabase() clones it */
    pgMigrated: string;
    /**
     * URLs of running copies of that cluster, one per worker (`VITEST_POOL_ID`): the files a worker
     * runs, one after another, share it, each in databases of its own
     */
    pgShared: string[];
  }
}

/**
 * Once per run: one initialised Postgres cluster with a database every migration is applied to (a
 * control plane's database is cloned from it: its migrations took about 0.3 s of each control
 * plane's start, some hundreds of times a run), and running copies of it, one per worker: each
 * control plane gets a database of its own there instead of a server of its own (start and stop
 * took about 0.5 s of each, some 250 times a run). One per worker, not one for the run: a
 * snapshot's xmin is the whole cluster's, so a transaction one file holds open would hold back
 * the events (listed and relayed in transaction order) of a file running beside it. A test that stops or breaks its server
 * starts its own from a copy of the stopped cluster (`startTestPostgres({ own: true })`; initdb
 * took about 2 of the 2.5 s such a start cost).
 */
const MIGRATED = 'berth_migrated';
const run = promisify(execFile);

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  // vitest runs a global setup for the root and again for each project that has files (both
  // inherit it); the projects see what the root provides, so the root alone sets up
  if (!project.isRootProject()) return undefined;
  const t = await tempDir('berth-pg-template-');
  const shared = await tempDir('berth-pg-shared-');
  const handle = await startEmbeddedPostgres(join(t.dir, 'pg'), pino({ level: 'silent' }), { durable: false });
  try {
    const admin = createPool(handle.url, 1);
    try { await admin.query(`CREATE DATABASE ${MIGRATED}`); } finally { await admin.end(); }
    const u = new URL(handle.url);
    u.pathname = `/${MIGRATED}`;
    const db = createPool(u.toString(), 1);
    try { await migrate(db); } finally { await db.end(); }
  } finally {
    await handle.stop();
  }
  const workers = Math.max(1, Number(project.globalConfig.maxWorkers) || 1);
  const servers = await Promise.all(Array.from({ length: workers }, async (_, i) => {
    const dir = join(shared.dir, String(i + 1));
    // cp -a: keeps the owner (the `postgres` user when tests run as root)
    await run('mkdir', ['-m', '755', dir]);
    await run('cp', ['-a', `${t.dir}/.`, dir]);
    // a file's control planes each with a pool, a listener and loops, and what the one before left closing
    return startEmbeddedPostgres(join(dir, 'pg'), pino({ level: 'silent' }), { durable: false, maxConnections: 300 });
  }));
  project.provide('pgTemplate', t.dir);
  project.provide('pgMigrated', MIGRATED);
  project.provide('pgShared', servers.map((s) => s.url));
  return async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await shared.cleanup();
    await t.cleanup();
  };
}
