import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from '../../control-plane/app.js';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * Container API failure paths without a Docker daemon: this control
 * plane's DOCKER_HOST is a socket that does not exist.
 */
let t: TestControlPlane;
let cp: ControlPlane;
let alice: Api;
let aliceId: number;
const TOKEN = 'proxy-test-token';

const readyImage = (userId: number, host: string, max = 2) => insertReadyImage(cp, userId, host, max);

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, proxyToken: TOKEN, dockerHost: 'unix:///nonexistent/docker.sock' });
  cp = t.cp;
  alice = await new Api(cp.url).signup('alice-disc@example.com');
  aliceId = (await alice.get('/api/auth/me')).body.user.id;
});
afterAll(async () => {
  await t?.close();
});

describe('containers with Docker away', () => {
  it('a create Docker refuses entirely leaves no rows behind (container.deleted), so a retry is not blocked by max_instances', async () => {
    const img = await readyImage(aliceId, 'c-disc.example.com', 2);
    for (let attempt = 0; attempt < 2; attempt++) {
      const r = await alice.post(`/api/containers/${img}`, { count: 2 });
      expect(r.status, r.text).toBe(503);
      expect(r.body.error.code).toBe('docker_unavailable');
      expect((await alice.get(`/api/containers?image_id=${img}`)).body.containers).toEqual([]);
    }
    const ev = (await alice.get('/api/events?limit=1000')).body.events.filter((e: any) => e.image_id === img).map((e: any) => e.type);
    expect(ev.filter((t: string) => t === 'container.created')).toHaveLength(4);
    expect(ev.filter((t: string) => t === 'container.deleted')).toHaveLength(4);
  }, 60_000);

  it('a start that cannot reach Docker marks the row failed, not creating', async () => {
    const img = await readyImage(aliceId, 'd-disc.example.com', 1);
    const { rows: [c] } = await cp.db.query<{ id: number }>(
      `INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired, docker_id)
       VALUES ($1, $2, 'cd', 'stopped', 'unknown', 8080, 'stopped', 'feedface') RETURNING id`, [aliceId, img]);
    const r = await alice.post(`/api/containers/${c.id}/start`);
    expect(r.status, r.text).toBe(503);
    const row = (await alice.get(`/api/containers/${c.id}`)).body;
    expect(row.status).toBe('failed');
    expect(row.status_reason).toMatch(/Docker daemon unreachable/);
  }, 60_000);
});
