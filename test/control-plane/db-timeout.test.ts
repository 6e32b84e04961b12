/**
 * The pool's statement timeout (db/pool.ts): a query running longer is cancelled by the server,
 * so one slow query cannot hold a connection for ever; migrations lift it for their session and
 * give the connection back with the pool's setting.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../control-plane/config.js';
import { migrate } from '../../control-plane/db/migrate.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

let t: TestControlPlane;
beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', dbStatementTimeoutMs: 300, dbPoolMax: 1 });
});
afterAll(async () => { await t?.close(); });

describe('statement timeout', () => {
  it('cancels a query past it; the connection serves the next one', async () => {
    await expect(t.cp.db.query('SELECT pg_sleep(2)')).rejects.toThrow(/statement timeout/);
    expect((await t.cp.db.query<{ n: number }>('SELECT 1 AS n')).rows[0].n).toBe(1);
    expect((await fetch(`${t.cp.url}/readyz`)).status).toBe(200);
  });

  it('migrations run without it, and hand the connection back with it (one connection in the pool)', async () => {
    // a migration slower than the pool's timeout
    const applied = await migrate(t.cp.db, [{ version: 9001, name: '9001_slow', sql: 'SELECT pg_sleep(0.6)' }]);
    expect(applied).toEqual([9001]);
    const { rows: [{ statement_timeout }] } = await t.cp.db.query<{ statement_timeout: string }>('SHOW statement_timeout');
    expect(statement_timeout).toBe('300ms');
  });

  it('defaults to 60 s; BERTH_DB_STATEMENT_TIMEOUT_MS sets it (0: none)', () => {
    expect(resolveConfig({}).dbStatementTimeoutMs).toBe(60_000);
    process.env.BERTH_DB_STATEMENT_TIMEOUT_MS = '0';
    try {
      expect(resolveConfig({}).dbStatementTimeoutMs).toBe(0);
    } finally {
      delete process.env.BERTH_DB_STATEMENT_TIMEOUT_MS;
    }
  });
});
