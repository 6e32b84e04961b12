/**
 * The autoscaler's loop against a real database, with the moves it asks for carried out (or not)
 * by stand-ins for the container service: a decision that took is made again as soon as the
 * windows say so; one that changed nothing is recorded once, not every tick.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Autoscaler } from '../../control-plane/autoscale/autoscaler.js';
import { USER_STOPPED } from '../../control-plane/containers/service.js';
import type { Db } from '../../control-plane/db/pool.js';
import { insertApp } from '../helpers/control-plane.js';
import { databaseWithUser } from '../helpers/postgres.js';

let stopDb: (() => Promise<void>) | undefined;
/** the routes of the apps made so far (what the stand-in proxy reports on) */
const ids: string[] = [];
let db: Db;
let userId = 0;

beforeAll(async () => {
  ({ db, userId, stop: stopDb } = await databaseWithUser('scaler@example.com'));
});

afterAll(() => stopDb?.());

/** An app that scales to zero (at most max(3, n) instances) with `n` running (default 1); returns its image and container ids, oldest first. */
async function appWithInstances(host: string, n = 1): Promise<{ imageId: number; containerId: number; containerIds: number[] }> {
  const revision = await insertApp(db, userId, host);
  const { rows: [i] } = await db.query<{ id: number }>(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, min_instances, max_instances)
     VALUES ($1, 'x', 'latest', $2, $3, 'ready', 'berth-test/none:1', 0, $4) RETURNING id`, [userId, host, revision, Math.max(3, n)]);
  const containerIds: number[] = [];
  for (let k = 0; k < n; k++) {
    const { rows: [c] } = await db.query<{ id: number }>(
      `INSERT INTO containers (user_id, image_id, status, health, desired) VALUES ($1, $2, 'running', 'healthy', 'running') RETURNING id`, [userId, i.id]);
    containerIds.push(Number(c.id));
  }
  ids.push(`img-${i.id}`);
  return { imageId: Number(i.id), containerId: containerIds[0], containerIds };
}

/**
 * An autoscaler with short windows over stand-ins: stops happen; starts never do (as with the
 * container quota reached); one live proxy reports `concurrency` for every route.
 */
function scaler(concurrency: (id: string) => number = () => 0, onStopped: (id: number) => Promise<void> = async () => {}, refuses: (id: number) => boolean = () => false,
  activation: { woke?: (imageId: number) => boolean; ensured?: number[] } = {}): Autoscaler {
  return new Autoscaler({
    db,
    // (only what the autoscaler calls)
    service: {
      stop: async (_user: number, id: number) => {
        if (refuses(id)) throw new Error(`the stand-in refuses to stop container ${id}`);
        await db.query(`UPDATE containers SET desired = 'stopped', status = 'stopped' WHERE id = $1`, [id]);
        await onStopped(id);
      },
    } as never,
    // no traffic is known, not guessed: a proxy reports
    proxies: {
      live: () => [{ routes: new Map(ids.map((id) => [id, { id, requests: 0, inflight: 0, concurrency: concurrency(id) }])) }],
    } as never,
    leader: { isLeader: true } as never,
    events: { nudge: () => {} } as never,
    log: pino({ level: 'silent' }),
    config: {
      enabled: true, tickMs: 50, stableWindowMs: 200, scaleToZeroGraceMs: 100,
      panicWindowPct: 10, panicThresholdPct: 200, maxScaleUpRate: 1000, maxScaleDownRate: 2,
    },
    activation: {
      isWaking: () => false,
      wokeWithin: (id: number) => activation.woke?.(id) ?? false,
      ensure: async (_u: number, id: number, n: number) => { activation.ensured?.push(id, n); return false; },
    },
  });
}

const decisions = async (imageId: number) => (await db.query(
  `SELECT payload FROM events WHERE type = 'autoscale.decision' AND (payload->>'image_id')::int = $1 ORDER BY id`, [imageId])).rows.map((r) => r.payload as { from: number; to: number });
const desired = async (containerId: number) => (await db.query<{ desired: string }>('SELECT desired FROM containers WHERE id = $1', [containerId])).rows[0].desired;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Tick every 50 ms until `done` or `ms` pass. */
async function tickUntil(a: Autoscaler, done: () => Promise<boolean>, ms: number): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until;) {
    await a.tick();
    if (await done()) return true;
    await sleep(50);
  }
  return false;
}

describe('the autoscaler', () => {
  it('scales an app back to zero again at once when it was woken after the last scale-down (not half a minute later)', async () => {
    const { imageId, containerId } = await appWithInstances('again.example.com');
    const a = scaler();
    expect(await tickUntil(a, async () => await desired(containerId) === 'stopped', 5000)).toBe(true);
    expect(await decisions(imageId)).toMatchObject([{ from: 1, to: 0 }]);
    // woken (a request came), then quiet again for the windows: the same move, 1 → 0, made again
    await db.query(`UPDATE containers SET desired = 'running', status = 'running' WHERE id = $1`, [containerId]);
    expect(await tickUntil(a, async () => await desired(containerId) === 'stopped', 5000)).toBe(true);
    expect(await decisions(imageId)).toMatchObject([{ from: 1, to: 0 }, { from: 1, to: 0 }]);
    await a.stop();
  });

  it('a wake that comes while the scale-down is carried out does not hold the next one back', async () => {
    const { imageId, containerId } = await appWithInstances('woken.example.com');
    // (the first stop is followed at once by a wake: the count is back at 1 when the move ends)
    let wakes = 1;
    const wake = async (id: number) => {
      if (wakes-- > 0) await db.query(`UPDATE containers SET desired = 'running', status = 'running' WHERE id = $1`, [id]);
    };
    const a = scaler(undefined, wake);
    expect(await tickUntil(a, async () => (await decisions(imageId)).length >= 2 && await desired(containerId) === 'stopped', 5000)).toBe(true);
    expect(await decisions(imageId)).toMatchObject([{ from: 1, to: 0 }, { from: 1, to: 0 }]);
    await a.stop();
  });

  it('records a move that changed nothing (no room for more instances) once, and does not try it every tick', async () => {
    const { imageId } = await appWithInstances('stuck.example.com');
    // far more traffic than one instance takes: it wants three, and none can be started
    const a = scaler((id) => (id === `img-${imageId}` ? 500 : 0));
    expect(await tickUntil(a, async () => (await decisions(imageId)).length > 0, 5000)).toBe(true);
    expect((await decisions(imageId))[0]).toMatchObject({ from: 1, to: 3 });
    // twenty more ticks: still one decision
    for (let i = 0; i < 20; i++) {
      await a.tick();
      await sleep(25);
    }
    expect(await decisions(imageId)).toHaveLength(1);
    await a.stop();
  });

  it('a scale-down whose stop of one instance fails still stops the others, and the app goes on down', async () => {
    const { imageId, containerIds: [c1, c2, c3, c4] } = await appWithInstances('stubborn.example.com', 4);
    // the newest instance refuses its first stop (its user stopped it meanwhile, Docker away…)
    let refusals = 1;
    const a = scaler(undefined, undefined, (id) => id === c4 && refusals-- > 0);
    // the first decision (at most halving: 4 → 2) stops the two newest, each on its own
    expect(await tickUntil(a, async () => (await decisions(imageId)).length > 0, 5000)).toBe(true);
    await a.stop(); // (waits for the move to be carried out)
    expect(await decisions(imageId)).toMatchObject([{ from: 4, to: 2 }]);
    expect([await desired(c1), await desired(c2), await desired(c3), await desired(c4)]).toEqual(['running', 'running', 'stopped', 'running']);
    // and the app goes on down, as the windows say, to zero (the refused instance too)
    const b = scaler();
    expect(await tickUntil(b, async () => (await Promise.all([c1, c2, c4].map(desired))).every((d) => d === 'stopped'), 5000)).toBe(true);
    await b.stop();
  });
  it('just woken, an app grows with the burst that woke it, and does not shrink until its stable window is over', async () => {
    const burst = await appWithInstances('burst.example.com');
    const ensured: number[] = [];
    // far more traffic than one instance takes, within the wake's window: scaled out (it was left alone a minute)
    const a = scaler((id) => (id === `img-${burst.imageId}` ? 500 : 0), undefined, undefined, { woke: () => true, ensured });
    expect(await tickUntil(a, async () => ensured.length > 0, 3000)).toBe(true);
    expect(ensured).toEqual([burst.imageId, 3]);
    await a.stop();
    // no traffic yet (the held requests have not reached it): within the window it is not taken away
    const quiet = await appWithInstances('quiet-wake.example.com');
    const b = scaler(() => 0, undefined, undefined, { woke: (id) => id === quiet.imageId });
    expect(await tickUntil(b, async () => await desired(quiet.containerId) === 'stopped', 1500)).toBe(false);
    await b.stop();
  });

  it("an instance its user stops while a tick reads is never refilled: the floor and the instances are read in one snapshot", async () => {
    // a floor of one, provisioned, its one instance running
    const { imageId, containerId } = await appWithInstances('user-stop-race.example.com');
    await db.query('UPDATE images SET min_instances = 1, min_instances_provisioned = true WHERE id = $1', [imageId]);
    let stopped = false;
    const ensured: number[] = [];
    // the user's stop commits right after the tick has read the apps, before it reads their instances
    const racing = new Proxy(db, {
      get(target, key) {
        if (key !== 'query') return Reflect.get(target, key);
        return async (sql: string, params?: unknown[]) => {
          const r = await target.query(sql, params);
          if (!stopped && sql.includes('FROM images i WHERE')) {
            stopped = true;
            await target.query(`UPDATE containers SET desired = 'stopped', status_reason = $2 WHERE id = $1`, [containerId, USER_STOPPED]);
          }
          return r;
        };
      },
    }) as Db;
    const a = new Autoscaler({
      db: racing,
      service: { stop: async () => {} } as never,
      proxies: { live: () => [{ routes: new Map([[`img-${imageId}`, { id: `img-${imageId}`, requests: 0, inflight: 0, concurrency: 0 }]]) }] } as never,
      leader: { isLeader: true } as never,
      events: { nudge: () => {} } as never,
      log: pino({ level: 'silent' }),
      config: { enabled: true, tickMs: 50, stableWindowMs: 200, scaleToZeroGraceMs: 100, panicWindowPct: 10, panicThresholdPct: 200, maxScaleUpRate: 1000, maxScaleDownRate: 2 },
      activation: { isWaking: () => false, wokeWithin: () => false, ensure: async (_u: number, id: number, n: number) => { ensured.push(id, n); return true; } },
    });
    for (let i = 0; i < 5; i++) {
      await a.tick();
      await sleep(20);
    }
    expect(stopped).toBe(true);
    expect(ensured).toEqual([]);
    expect((await decisions(imageId)).filter((d) => d.to > 0)).toEqual([]);
    await a.stop();
  });
});
