import type { Db } from './pool.js';
import { migrations as defaultMigrations, type Migration } from './migrations/index.js';

/** Arbitrary constant: every control plane takes this advisory lock while migrating. */
const MIGRATION_LOCK_KEY = 0x62657274; // "bert"

/**
 * Apply pending migrations in order, each in its own transaction, under a session-level
 * advisory lock so that two control planes starting at once do not race. Safe to run again:
 * applied versions are recorded in schema_migrations and skipped.
 * Returns the versions applied by this call.
 */
export async function migrate(db: Db, migrations: Migration[] = defaultMigrations): Promise<number[]> {
  const client = await db.connect();
  const applied: number[] = [];
  try {
    // waiting for another control plane's migrations, and a migration itself, may take long
    await client.query('SET statement_timeout = 0');
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`);
      const { rows } = await client.query<{ version: number }>('SELECT version FROM schema_migrations');
      const done = new Set(rows.map((r) => r.version));
      for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
        if (done.has(m.version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
          await client.query('COMMIT');
          applied.push(m.version);
        } catch (e) {
          await client.query('ROLLBACK').catch(() => {});
          throw new Error(`migration ${m.name} failed: ${(e as Error).message}`);
        }
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(() => {});
    }
  } finally {
    // back to the pool's setting before the client serves anything else
    await client.query('RESET statement_timeout').catch(() => {});
    client.release();
  }
  return applied;
}

export async function latestMigrationApplied(db: Db, migrations: Migration[] = defaultMigrations): Promise<boolean> {
  const want = Math.max(...migrations.map((m) => m.version));
  const { rows } = await db.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
  return (rows[0]?.v ?? 0) >= want;
}
