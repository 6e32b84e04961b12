import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { BuildQueue } from '../../control-plane/images/build-queue.js';
import { createMetrics } from '../../control-plane/http/metrics.js';

/**
 * Build bookkeeping when the database misbehaves, with a scripted fake database and runtime:
 * followers always get an end, and transient Postgres errors are retried.
 */
const row = { id: 7, user_id: 1, docker_image: 'berth-u1-i7:latest', app_hostname: 'q.example.com', status: 'building', build_logs: '', build_logs_truncated: false };

function fakeDb(opts: { failClaim?: unknown[]; failFinish?: unknown[] }) {
  const failClaim = [...(opts.failClaim ?? [])];
  const failFinish = [...(opts.failFinish ?? [])];
  const calls = { claim: 0, finish: 0, events: 0 };
  const db = {
    async query(sql: string) {
      if (sql.includes('build_started_at = now()')) {
        calls.claim++;
        if (failClaim.length) throw failClaim.shift();
        return { rows: [{ ...row }] };
      }
      return { rows: [] }; // periodic log flushes
    },
    async connect() {
      return {
        release() {},
        async query(sql: string) {
          if (/^(BEGIN|COMMIT|ROLLBACK)/.test(sql)) return { rows: [] };
          if (sql.includes('SET status = $2')) {
            calls.finish++;
            if (failFinish.length) throw failFinish.shift();
            return { rows: [{ ...row, status: 'ready' }] };
          }
          if (sql.includes('INSERT INTO events')) { calls.events++; return { rows: [{ id: 1, created_at: new Date() }] }; }
          return { rows: [] };
        },
      };
    },
  };
  return { db, calls };
}

function queue(db: unknown) {
  return new BuildQueue({
    db: db as never,
    runtime: { endpoint: 'fake', buildImage: async (o: { onOutput(t: string): void }) => { o.onOutput('Step 1/1\n'); return { imageId: 'sha256:abc' }; }, removeImage: async () => {} } as never,
    events: { nudge() {} } as never,
    metrics: createMetrics(() => undefined as never),
    log: pino({ level: 'silent' }),
    dataDir: '/nonexistent', concurrency: 1, maxLogBytes: 65536, timeoutMs: 60_000,
    dbAttempts: 4, dbRetryBaseMs: 10,
  });
}

/** Enqueue, follow like ?follow=1 does, and wait (bounded) for the end. */
async function follow(q: BuildQueue): Promise<{ status: string | undefined; text: string }> {
  q.enqueue(row.id);
  const log = q.liveLog(row.id)!;
  const status = await new Promise<string | undefined>((resolve) => {
    log.subscribe(() => {}, resolve);
    setTimeout(() => resolve(undefined), 3000);
  });
  return { status, text: log.text() };
}

describe('build bookkeeping against database errors', () => {
  it('retries a transient error when recording the result, then followers see ready', async () => {
    const { db, calls } = fakeDb({ failFinish: [Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }), new Error('Connection terminated unexpectedly')] });
    const q = queue(db);
    const r = await follow(q);
    expect(r.status).toBe('ready');
    expect(calls.finish).toBe(3);
    expect(calls.events).toBe(1);
    await q.close();
  });

  it('a permanent error when recording the result still ends the log (followers do not hang)', async () => {
    const { db, calls } = fakeDb({ failFinish: [Object.assign(new Error('value too long'), { code: '22001' })] });
    const q = queue(db);
    const r = await follow(q);
    expect(r.status).toBe('build_failed');
    expect(r.text).toMatch(/could not record the build result \(value too long\)/);
    expect(calls.finish).toBe(1);
    await new Promise((res) => setTimeout(res, 50));
    expect(q.stats).toEqual({ running: 0, queued: 0 });
    await q.close();
  });

  it('a database that stays away while claiming the build ends the log too', async () => {
    const down = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const { db, calls } = fakeDb({ failClaim: [down(), down(), down(), down()] });
    const q = queue(db);
    const r = await follow(q);
    expect(r.status).toBe('build_failed');
    expect(calls.claim).toBe(4);
    await q.close();
  });
});
