import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { inject } from 'vitest';
import { startEmbeddedPostgres } from '../../control-plane/db/embedded.js';
import { createPool, type Db } from '../../control-plane/db/pool.js';
import { tempDir } from './tmp.js';

const run = promisify(execFile);

export interface TestPostgres {
  /** URL of the server's default database */
  url: string;
  /**
   * A new database on this server with every migration applied (cloned: a control plane started
   * on it has nothing to migrate), or empty with `{ empty: true }` (tests of the migrations).
   * Returns its URL.
   */
  createDatabase(opts?: { empty?: boolean }): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A real PostgreSQL for a test: by default its worker's shared server (helpers/global-setup.ts), where
 * `createDatabase()` gives each control plane a database of its own and `stop()` drops the ones it
 * gave; with `{ own: true }` an embedded server of the test's own (about half a second to start),
 * for a test that stops or breaks it. DATABASE_URL in the environment is ignored on purpose: tests
 * never touch a real database.
 */
export async function startTestPostgres(opts: { own?: boolean } = {}): Promise<TestPostgres> {
  const shared = opts.own ? undefined : inject('pgShared');
  if (shared !== undefined && shared.length > 0) {
    // this worker's (files run beside each other never share one: see global-setup.ts)
    const pool = Number(process.env.VITEST_POOL_ID ?? 1);
    return databasesOn(shared[(pool - 1) % shared.length], async () => {});
  }
  const tmp = await tempDir('berth-pg-');
  // a copy of the run's initialised cluster (helpers/global-setup.ts): no initdb per file. `cp -a`
  // keeps its owner (the `postgres` user when tests run as root), which fs.cp does not
  const template = inject('pgTemplate');
  if (template) await run('cp', ['-a', `${template}/.`, tmp.dir]);
  // (throwaway: nothing flushed to disk)
  const handle = await startEmbeddedPostgres(join(tmp.dir, 'pg'), pino({ level: 'silent' }), { durable: false });
  return databasesOn(handle.url, async () => {
    await handle.stop();
    await tmp.cleanup();
  });
}

/** createDatabase() on the server at `url`; stop() drops what it created, then calls `after`. */
function databasesOn(url: string, after: () => Promise<void>): TestPostgres {
  const created: string[] = [];
  const admin = async <T>(work: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try { return await work(c); } finally { await c.end(); }
  };
  let stopped = false;
  return {
    url,
    async createDatabase(opts = {}) {
      const name = `t_${randomBytes(6).toString('hex')}`;
      const migrated = inject('pgTemplate') ? inject('pgMigrated') : undefined;
      const clone = migrated !== undefined && !opts.empty;
      await admin((c) => c.query(clone ? `CREATE DATABASE ${name} TEMPLATE ${migrated}` : `CREATE DATABASE ${name}`));
      created.push(name);
      const u = new URL(url);
      u.pathname = `/${name}`;
      if (clone) {
        // the cluster id a migration drew is the template's: each clone draws its own (control
        // planes with one id take each other's containers for their own)
        const d = new pg.Client({ connectionString: u.toString() });
        await d.connect();
        try {
          await d.query(`UPDATE berth_settings SET value = $1 WHERE key = 'cluster_id'`, [randomBytes(6).toString('hex')]);
        } finally {
          await d.end();
        }
      }
      return u.toString();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      // (FORCE: a connection a test left open, or a child process still winding down, would keep it)
      if (created.length > 0) {
        await admin(async (c) => { for (const name of created.splice(0)) await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`); });
      }
      await after();
    },
  };
}

/**
 * A migrated database of its own (on the worker's shared server) with one user in it, for tests of a part that
 * only needs the database (no control plane): its pool, the user's id, and how to stop both.
 */
export async function databaseWithUser(email: string): Promise<{ db: Db; userId: number; stop(): Promise<void> }> {
  const pg = await startTestPostgres();
  const db = createPool(await pg.createDatabase(), 4);
  const { rows: [u] } = await db.query<{ id: number }>(`INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id`, [email]);
  return { db, userId: Number(u.id), async stop() { await db.end(); await pg.stop(); } };
}
