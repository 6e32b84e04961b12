import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { RouteHub } from '../../control-plane/discovery/hub.js';
import type { Db } from '../../control-plane/db/pool.js';

/**
 * The hub's poll for other control planes' changes, against a database stand-in whose reads
 * take as long as asked (the real one: discovery.test.ts and the e2e tests).
 */
function slowDb(readMs: () => number) {
  const reads: number[] = [];
  const db = {
    async query(sql: string) {
      if (sql.includes('nextval')) return { rows: [{ v: reads.length + 1 }] };
      // the route query (the first of a rebuild), then the private apps' invokers
      if (!sql.includes('app_invokers')) reads.push(Date.now());
      await new Promise((r) => setTimeout(r, readMs()));
      return { rows: [] };
    },
  };
  return { db: db as unknown as Db, reads };
}

describe('route hub (control-plane/discovery/hub.ts)', () => {
  it('changes coming faster than a rebuild takes cost one rebuild after the running one, not one each; every refresh() gets a table built after it', async () => {
    const { db, reads } = slowDb(() => 50);
    const hub = new RouteHub(db, '127.0.0.1', pino({ level: 'silent' }), 5, 60_000);
    await hub.start();
    try {
      const from = reads.length;
      // 40 changes over ~400 ms, each waiting for its table (a rebuild takes ~100 ms)
      const waits: Array<Promise<{ asked: number; built: number }>> = [];
      for (let i = 0; i < 40; i++) {
        const asked = Date.now();
        waits.push(hub.refresh().then(() => ({ asked, built: Date.now() })));
        await new Promise((r) => setTimeout(r, 10));
      }
      const done = await Promise.all(waits);
      await new Promise((r) => setTimeout(r, 300));
      // about one rebuild per rebuild time (~5 over 500 ms), not 40 queued one behind the other
      expect(reads.length - from).toBeLessThanOrEqual(8);
      // each answered by a rebuild that started after it asked: not later than two rebuilds on
      for (const d of done) expect(d.built - d.asked).toBeLessThan(1000);
    } finally {
      hub.stop();
    }
  });

  it('polls every pollMs while a rebuild is quick, and waits ten times a slow rebuild between polls', async () => {
    let ms = 1;
    const { db, reads } = slowDb(() => ms);
    const hub = new RouteHub(db, '127.0.0.1', pino({ level: 'silent' }), 5, 20);
    await hub.start();
    try {
      await new Promise((r) => setTimeout(r, 600));
      // quick: about one read per 25 ms (20 ms poll + 5 ms debounce)
      expect(reads.length).toBeGreaterThan(10);
      ms = 60;
      await new Promise((r) => setTimeout(r, 400));
      const from = reads.length;
      await new Promise((r) => setTimeout(r, 3000));
      // slow (a rebuild reads twice, ~120 ms): a poll about every 1.2 s, not every 20 ms
      expect(reads.length - from).toBeLessThanOrEqual(4);
      expect(reads.length - from).toBeGreaterThanOrEqual(2);
      const gaps = reads.slice(from).map((t, i, a) => (i === 0 ? Infinity : t - a[i - 1])).slice(1);
      for (const g of gaps) expect(g).toBeGreaterThanOrEqual(1000);
    } finally {
      hub.stop();
    }
  });

  it('a rebuild that fails is tried again by itself, sooner than the poll would (later each time)', async () => {
    let failing = 3;
    const tries: number[] = [];
    const db = {
      async query(sql: string) {
        if (sql.includes('nextval')) return { rows: [{ v: tries.length + 1 }] };
        if (sql.includes('pg_stat_user_tables')) return { rows: [{ n: '1' }] };
        if (!sql.includes('app_invokers')) {
          tries.push(Date.now());
          if (failing-- > 0) throw new Error('the database is away');
        }
        return { rows: [] };
      },
    } as unknown as Db;
    // (a poll an hour apart: only the retries can bring the table)
    const hub = new RouteHub(db, '127.0.0.1', pino({ level: 'silent' }), 5, 3_600_000);
    await hub.start();
    try {
      const t0 = Date.now();
      while (hub.table === null && Date.now() - t0 < 15_000) await new Promise((r) => setTimeout(r, 20));
      expect(hub.table).not.toBeNull();
      expect(tries.length).toBe(4);
      // 1 s, 2 s, 4 s after each failure
      const gaps = tries.slice(1).map((t, i) => t - tries[i]);
      expect(gaps[0]).toBeGreaterThanOrEqual(900);
      expect(gaps[1]).toBeGreaterThan(gaps[0]);
      expect(gaps[2]).toBeGreaterThan(gaps[1]);
    } finally {
      hub.stop();
    }
  }, 20_000);
});
