import { request, type IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { streamLimits } from '../../control-plane/http/stream-limits.js';
import { Api } from '../helpers/api.js';
import { insertApp, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * The per-user cap on open SSE streams (control-plane/http/stream-limits.ts), over HTTP and without
 * Docker: build-log follows (GET /api/images/:id/build-logs?follow=1) of a build another control
 * plane is running (a `building` row with a live heartbeat elsewhere: the follow polls, open until
 * closed). With a cap of 3 per user: the 4th follow is 429 `too_many_streams` with a message naming
 * the cap, while another user still opens their own 3; a refusal takes no slot; a closed follow
 * frees its slot at once; every slot is given back when the clients leave.
 */
let t: TestControlPlane;
let alice: Api;
let bob: Api;
let aliceId: number;
let bobId: number;
// every test client is 127.0.0.1: the per-address cap is set out of the way, the total well above 2 users' share
const env = { BERTH_MAX_STREAMS_PER_USER: '3', BERTH_MAX_STREAMS: '50', BERTH_MAX_STREAMS_PER_ADDRESS: '100' };

beforeAll(async () => {
  Object.assign(process.env, env);
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  alice = await new Api(t.cp.url).signup('alice-streams@example.com');
  bob = await new Api(t.cp.url).signup('bob-streams@example.com');
  aliceId = Number((await alice.get('/api/auth/me')).body.user.id);
  bobId = Number((await bob.get('/api/auth/me')).body.user.id);
});

afterAll(async () => {
  for (const k of Object.keys(env)) delete process.env[k];
  await t?.close();
});

/** An image whose build runs on another (live) control plane: following its log never ends by itself. */
async function buildingElsewhere(userId: number, host: string): Promise<number> {
  const revision = await insertApp(t.cp.db, userId, host);
  const { rows: [r] } = await t.cp.db.query<{ id: string }>(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image, build_logs, build_runner, build_heartbeat_at, min_instances, max_instances)
     VALUES ($1, 'x', 'latest', $2, $3, 'building', 'berth-test/none:1', 'step 1/2\n', 'elsewhere:/data', now() + interval '1 hour', 0, 1) RETURNING id`,
    [userId, host, revision]);
  return Number(r.id);
}

interface Stream { status: number; contentType: string; text: string; close(): void }

/**
 * Open a follow; resolves with the status and, for a 200, its first SSE event (the stream stays
 * open until `close`), else the whole (JSON) answer.
 */
function follow(api: Api, imageId: number): Promise<Stream> {
  const u = new URL(t.cp.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: `/api/images/${imageId}/build-logs?follow=1`, headers: { authorization: `Bearer ${api.token}`, accept: 'text/event-stream' } }, (res: IncomingMessage) => {
      let text = '';
      res.setEncoding('utf8');
      const done = () => resolve({ status: res.statusCode!, contentType: String(res.headers['content-type']), text, close: () => req.destroy() });
      res.on('data', (c: string) => { text += c; if (res.statusCode === 200 && text.includes('\n\n')) done(); });
      res.on('end', done);
    });
    req.on('error', reject);
    req.end();
  });
}

const waitUntil = async (what: string, cond: () => boolean, ms = 3000) => {
  for (const end = Date.now() + ms; !cond();) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('open streams per user', () => {
  it('the 4th follow of one user is 429 too_many_streams; another user is not held back; a closed one frees its slot', async () => {
    const limits = streamLimits(t.cp.app);
    const aImg = await buildingElsewhere(aliceId, 'alice-streams.example.com');
    const bImg = await buildingElsewhere(bobId, 'bob-streams.example.com');
    const open: Stream[] = [];
    /** a follow, kept to be closed at the end, answered `status` */
    const opened = async (who: Api, img: number, status: number) => {
      const s = await follow(who, img);
      open.push(s);
      expect(s.status).toBe(status);
      return s;
    };
    try {
      for (let i = 0; i < 3; i++) {
        const s = await opened(alice, aImg, 200);
        expect(s.contentType).toMatch(/^text\/event-stream/);
        expect(s.text).toBe('event: log\ndata: {"text":"step 1/2\\n"}\n\n');
      }
      expect(limits.count(aliceId)).toBe(3);

      // one more: refused with a clear message, and the refusal holds nothing
      for (let i = 0; i < 3; i++) {
        const over = await opened(alice, aImg, 429);
        expect(JSON.parse(over.text).error).toMatchObject({
          code: 'too_many_streams', message: 'you already have 3 open build log follow streams (at most 3); close one first',
        });
      }
      expect(limits.count(aliceId)).toBe(3);
      // what is not a stream is not capped: the log so far, as JSON
      const plain = await alice.get(`/api/images/${aImg}/build-logs`);
      expect(plain.status).toBe(200);
      expect(plain.body).toMatchObject({ image_id: aImg, status: 'building', logs: 'step 1/2\n' });

      // bob's own 3, while alice is at her cap; then his own refusal
      for (let i = 0; i < 3; i++) await opened(bob, bImg, 200);
      await opened(bob, bImg, 429);
      expect([limits.count(aliceId), limits.count(bobId), limits.count()]).toEqual([3, 3, 6]);

      // alice closes one: its slot is free as soon as the server hears the close, and she opens another
      open[0].close();
      await waitUntil('the closed follow gives its slot back', () => limits.count(aliceId) === 2);
      await opened(alice, aImg, 200);
      await opened(alice, aImg, 429);
    } finally {
      for (const s of open) s.close();
    }
    await waitUntil('every slot is given back', () => limits.count() === 0);
  });
});
