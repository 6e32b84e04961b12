/**
 * Activation.ensure() against a real database, with a stand-in container service: what it says
 * it did drives a wake's hold on the autoscaler and the autoscaler's own credit for a move, so it
 * says true only when it started or made an instance.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Activation } from '../../control-plane/containers/activation.js';
import type { Db } from '../../control-plane/db/pool.js';
import { insertApp } from '../helpers/control-plane.js';
import { databaseWithUser } from '../helpers/postgres.js';

let stopDb: (() => Promise<void>) | undefined;
let db: Db;
let userId = 0;

beforeAll(async () => {
  ({ db, userId, stop: stopDb } = await databaseWithUser('waker@example.com'));
});

afterAll(() => stopDb?.());

/** An app scaled to zero with `stopped` stopped instances; its image id and theirs. */
async function app(host: string, stopped: number): Promise<{ imageId: number; containerIds: number[] }> {
  const revision = await insertApp(db, userId, host);
  const { rows: [i] } = await db.query<{ id: number }>(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, min_instances, max_instances)
     VALUES ($1, 'x', 'latest', $2, $3, 'ready', 'berth-test/none:1', 0, 3) RETURNING id`, [userId, host, revision]);
  const containerIds: number[] = [];
  for (let k = 0; k < stopped; k++) {
    const { rows: [c] } = await db.query<{ id: number }>(
      `INSERT INTO containers (user_id, image_id, status, health, desired) VALUES ($1, $2, 'stopped', 'unknown', 'stopped') RETURNING id`, [userId, i.id]);
    containerIds.push(Number(c.id));
  }
  return { imageId: Number(i.id), containerIds };
}

/** Stand-ins: `start` marks the container running unless `refuses` says no; `create` makes `room` instances at most. */
function activation(o: { room: number; refuses?: (id: number) => boolean }) {
  const calls = { started: [] as number[], created: 0 };
  const service = {
    start: async (_user: number, id: number) => {
      if (o.refuses?.(id)) throw new Error(`the stand-in refuses to start container ${id}`);
      await db.query(`UPDATE containers SET desired = 'running', status = 'running' WHERE id = $1`, [id]);
      calls.started.push(id);
    },
    create: async (_user: number, _image: number, n: number) => {
      const made = Math.min(n, o.room);
      calls.created += made;
      return Array.from({ length: made }, (_, k) => ({ id: 100_000 + k }));
    },
  };
  return { a: new Activation(db, service as never, pino({ level: 'silent' })), calls };
}

describe('Activation.ensure', () => {
  it('says false when no instance can be made (max_instances or the quota reached)', async () => {
    const { imageId } = await app('full.example.com', 0);
    const { a, calls } = activation({ room: 0 });
    expect(await a.ensure(userId, imageId, 1)).toBe(false);
    expect(calls.created).toBe(0);
  });

  it('says true when it made one', async () => {
    const { imageId } = await app('roomy.example.com', 0);
    const { a, calls } = activation({ room: 1 });
    expect(await a.ensure(userId, imageId, 1)).toBe(true);
    expect(calls.created).toBe(1);
  });

  it('starts stopped instances before making new ones, and says true for those it started before a failure', async () => {
    const { imageId, containerIds: [first, second] } = await app('halfway.example.com', 2);
    const { a, calls } = activation({ room: 3, refuses: (id) => id === second });
    expect(await a.ensure(userId, imageId, 2)).toBe(true);
    expect(calls.started).toEqual([first]);
    expect(calls.created).toBe(0);
  });

  it('says false, and does nothing, when enough instances are wanted running already', async () => {
    const { imageId, containerIds: [first] } = await app('awake.example.com', 1);
    await db.query(`UPDATE containers SET desired = 'running', status = 'running' WHERE id = $1`, [first]);
    const { a, calls } = activation({ room: 3 });
    expect(await a.ensure(userId, imageId, 1)).toBe(false);
    expect(calls).toEqual({ started: [], created: 0 });
  });
});
