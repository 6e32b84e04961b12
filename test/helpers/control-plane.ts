import type { Queryable } from '../../control-plane/db/pool.js';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { startTestPostgres, type TestPostgres } from './postgres.js';
import { tempDir } from './tmp.js';

export interface TestControlPlane {
  cp: ControlPlane;
  pg: TestPostgres;
  close(): Promise<void>;
}

/**
 * A control plane on a free port with a database of its own (on the run's shared Postgres, or on a
 * server of its own with `ownPostgres`, for a test that stops it) and a data dir, quiet.
 */
export async function startTestControlPlane(opts: NonNullable<Parameters<typeof startControlPlane>[0]> = {}, test: { ownPostgres?: boolean } = {}): Promise<TestControlPlane> {
  const pg = await startTestPostgres({ own: test.ownPostgres });
  const data = await tempDir();
  const cp = await startControlPlane({ port: 0, dataDir: data.dir, databaseUrl: await pg.createDatabase(), quiet: true, ...opts });
  return {
    cp,
    pg,
    async close() {
      // (each part goes even when one before it fails: a test that broke the database)
      try {
        await cp.close();
      } finally {
        try { await pg.stop(); } finally { await data.cleanup(); }
      }
    },
  };
}

/** An image row that is `ready` without a build (for tests that never start its containers). */
export async function insertReadyImage(cp: ControlPlane, userId: number, host: string, maxInstances = 2): Promise<number> {
  const revision = await insertApp(cp.db, userId, host);
  const { rows: [r] } = await cp.db.query<{ id: number }>(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, min_instances, max_instances)
     VALUES ($1, 'x', 'latest', $2, $4, 'ready', 'berth-test/none:1', 0, $3) RETURNING id`, [userId, host, maxInstances, revision]);
  return Number(r.id);
}

/** The app row an image needs (its next revision number, creating the app on the first). */
export async function insertApp(db: Queryable, userId: number, host: string): Promise<number> {
  const { rows: [a] } = await db.query<{ last_revision: number }>(
    `INSERT INTO apps (app_hostname, user_id, last_revision) VALUES ($1, $2, 1)
     ON CONFLICT (app_hostname) DO UPDATE SET last_revision = apps.last_revision + 1 RETURNING last_revision`, [host, userId]);
  return a.last_revision;
}
