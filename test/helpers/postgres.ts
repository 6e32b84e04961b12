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
 * One real embedded PostgreSQL per test file (about half a second to start). Use
 * `createDatabase()` to give each control plane in the file its own database.
 * DATABASE_URL in the environment is ignored on purpose: tests never touch a real database.
 */
export async function startTestPostgres(): Promise<TestPostgres> {
  const tmp = await tempDir('berth-pg-');
  // a copy of the run's initialised cluster (helpers/global-setup.ts): no initdb per file. `cp -a`
  // keeps its owner (the `postgres` user when tests run as root), which fs.cp does not
  const template = inject('pgTemplate');
  if (template) await run('cp', ['-a', `${template}/.`, tmp.dir]);
  // (throwaway: nothing flushed to disk)
  const handle = await startEmbeddedPostgres(join(tmp.dir, 'pg'), pino({ level: 'silent' }), { durable: false });
  return {
    url: handle.url,
    async createDatabase(opts = {}) {
      const name = `t_${randomBytes(6).toString('hex')}`;
      const c = new pg.Client({ connectionString: handle.url });
      await c.connect();
      const migrated = template ? inject('pgMigrated') : undefined;
      const clone = migrated !== undefined && !opts.empty;
      try {
        await c.query(clone ? `CREATE DATABASE ${name} TEMPLATE ${migrated}` : `CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      const u = new URL(handle.url);
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
      await handle.stop();
      await tmp.cleanup();
    },
  };
}

/**
 * A migrated database of its own embedded PostgreSQL with one user in it, for tests of a part that
 * only needs the database (no control plane): its pool, the user's id, and how to stop both.
 */
export async function databaseWithUser(email: string): Promise<{ db: Db; userId: number; stop(): Promise<void> }> {
  const pg = await startTestPostgres();
  const db = createPool(await pg.createDatabase(), 4);
  const { rows: [u] } = await db.query<{ id: number }>(`INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id`, [email]);
  return { db, userId: Number(u.id), async stop() { await db.end(); await pg.stop(); } };
}
