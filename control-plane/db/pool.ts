import pg from 'pg';

export type Db = pg.Pool;
export type DbClient = pg.PoolClient;
/** Anything that can run a query: the pool or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, 'query'> | pg.PoolClient;

// BIGINT (int8) and NUMERIC come back as strings by default; our ids fit in a JS number.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

/**
 * Errors of connections the pool could not open because the database could not be reached (it
 * refused, it is restarting, the network is down). Marked where they happen: their codes
 * (ECONNREFUSED, ENOENT for a socket path, ETIMEDOUT) are the same as a Docker socket's, so the
 * code alone cannot say whose they are. The database's own refusals (a wrong password, "starting
 * up") arrive as pg DatabaseErrors with a SQLSTATE and are not marked.
 */
const unreachable = new WeakSet<object>();

/** Did the pool fail to reach the database for this error (see `unreachable`)? */
export function isDatabaseUnreachable(e: unknown): boolean {
  return typeof e === 'object' && e !== null && unreachable.has(e);
}

type ConnectCallback = ((err: Error) => void) | ((err: null, c: pg.Client) => void);
/** pg's client, marking the network errors of its connect (pg-pool connects with a callback). */
class MarkingClient extends pg.Client {
  override connect(): Promise<pg.Client>;
  override connect(callback: ConnectCallback): void;
  override connect(callback?: ConnectCallback): Promise<pg.Client> | void {
    if (callback === undefined) return super.connect().catch((err: Error) => Promise.reject(markUnreachable(err)));
    const done = callback as (err: Error | null, c?: pg.Client) => void;
    super.connect((err: Error | null) => (err ? done(markUnreachable(err)) : done(null, this)));
  }
}

/**
 * The network's "not now": refused (restarting), reset, unreachable, timed out, a socket path gone,
 * a name server that did not answer. Not a TLS or authentication failure (a wrong certificate, an
 * impostor server) nor a name that does not exist: those are configuration, a 500 to look at.
 */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EPIPE', 'ENOENT', 'EAI_AGAIN']);

function markUnreachable(err: Error): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (!(err instanceof pg.DatabaseError) && ((code !== undefined && UNREACHABLE_CODES.has(code)) || /^Connection terminated unexpectedly/.test(err.message))) unreachable.add(err);
  return err;
}

/**
 * `statementTimeoutMs` (0: none): a query running longer is cancelled by the server, so a slow
 * one (a tenant's metrics over years, a lock held by a stuck session) cannot hold a pool
 * connection for ever and starve every other request. Migrations lift it for their session.
 */
export function createPool(connectionString: string, max = 10, statementTimeoutMs = 0): Db {
  const pool = new pg.Pool({
    Client: MarkingClient, connectionString, max, idleTimeoutMillis: 30_000, connectionTimeoutMillis: 10_000,
    ...(statementTimeoutMs > 0 ? { statement_timeout: statementTimeoutMs } : {}),
  });
  // An idle client losing its connection must not crash the process.
  pool.on('error', () => {});
  return pool;
}

/**
 * Run `fn` inside BEGIN/COMMIT on one client; ROLLBACK on any error.
 * Use it for every state change that also writes an event (outbox).
 */
export async function withTransaction<T>(db: Db, fn: (client: DbClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
  const client = await db.connect();
  try {
    await client.query(begin);
    const out = await fn(client);
    await client.query('COMMIT');
    return out;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}

/**
 * Run read-only `fn` on one snapshot: every query sees the same rows and the same `now()` (an
 * answer that prices running work twice must price it at one instant).
 */
export function withSnapshot<T>(db: Db, fn: (client: DbClient) => Promise<T>): Promise<T> {
  return withTransaction(db, fn, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
}

/** Postgres unique_violation, optionally on a named constraint. */
export function isUniqueViolation(e: unknown, constraint?: string): boolean {
  const err = e as { code?: string; constraint?: string };
  return err?.code === '23505' && (constraint === undefined || err.constraint === constraint);
}

const TRANSIENT_PG = new Set(['57P01', '57P02', '57P03', '53300', '40001', '40P01', ...UNREACHABLE_CODES]);
/**
 * Errors that typically pass: the server restarting or refusing connections for a moment,
 * a dropped connection, serialization failures and deadlocks. Constraint and syntax errors are not.
 */
export function isTransientPgError(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  if (!err) return false;
  if (err.code && (TRANSIENT_PG.has(err.code) || err.code.startsWith('08'))) return true;
  return /Connection terminated|connection error|timeout exceeded when trying to connect|Client was closed/i.test(err.message ?? '');
}
