import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import { normalizeHost } from '../../shared/hostname.js';
import { ApiError, badRequest, notFound } from '../http/errors.js';
import { idParams, int } from '../http/schemas.js';
import type { ContainerRow } from '../images/repo.js';
import { containerLogs, type LogLine, type LogStream } from '../runtime/logs.js';

/**
 * App logs: a container's stdout/stderr, or every instance of an app, from Docker.
 *
 * - `GET /api/containers/:id/logs` and `GET /api/apps/:host/logs` (each line prefixed by its
 *   container), query `tail` (lines per container; default all for one container, 200 per
 *   container for an app), `since` (`10m`, `2h`, `30s`, `1d`, unix seconds or an RFC 3339 time),
 *   `follow=1`, `timestamps=1`, and for an app `container=ID` (one of its instances).
 * - Plain chunked text by default; `Accept: text/event-stream` gives SSE: `event: log` with
 *   `{container_id, image_id, stream, time, line}` per line, `event: end` when a non-following
 *   read is complete (and when a followed container stops).
 * - Lines of an app's instances are merged by Docker's timestamps for the backlog; while following,
 *   new instances (scale-up, a new revision) are picked up within two seconds.
 * - Another user's container or app answers 404. A client that goes away closes every Docker
 *   stream it had (runtime/logs.ts counts them); slow clients pause them (backpressure).
 */

interface LogQuery { tail?: number; since?: string; follow?: string; timestamps?: string; container?: number }

const BOOL = { type: 'string', enum: ['0', '1', 'true', 'false', ''] } as const;
const querySchema = (app: boolean) => ({
  type: 'object',
  additionalProperties: false,
  properties: {
    tail: { ...int(0, 100_000), description: 'last N lines (per container)' },
    since: { type: 'string', maxLength: 64, description: 'only lines after: 10m, 2h, 30s, 1d, unix seconds, or an RFC 3339 time' },
    follow: { ...BOOL, description: '1: keep streaming new lines' },
    timestamps: { ...BOOL, description: '1: prefix each text line with its Docker timestamp' },
    ...(app ? { container: { ...int(1, Number.MAX_SAFE_INTEGER), description: 'only this instance (a container id of the app)' } } : {}),
  },
});

const on = (v: string | undefined) => v === '1' || v === 'true' || v === '';
/** Instances of an app beyond which a single request refuses (each is one Docker stream). */
const MAX_STREAMS = 100;
const APP_DEFAULT_TAIL = 200;

/** `10m` / `2h` / `1d` / `30s` / unix seconds / RFC 3339 → unix seconds; 400 otherwise. */
export function parseSince(raw: string, now = Date.now()): number {
  const s = raw.trim();
  const rel = /^(\d{1,7})(s|m|h|d)$/.exec(s);
  if (rel) return (now - Number(rel[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[rel[2] as 's' | 'm' | 'h' | 'd']) / 1000;
  if (/^\d{1,12}(\.\d{1,9})?$/.test(s)) return Number(s);
  if (/^\d{4}-\d\d-\d\d([T ][\d:.]+)?(Z|[+-]\d\d:?\d\d)?$/.test(s)) {
    const t = Date.parse(s);
    if (Number.isFinite(t)) return t / 1000;
  }
  throw badRequest(`query.since "${raw.slice(0, 64)}" is not a duration (10m, 2h, 30s, 1d), unix seconds or an RFC 3339 time`);
}

export default async function logRoutes(app: FastifyInstance): Promise<void> {
  // live follows end when the control plane closes (app.close() would wait for them otherwise)
  const live = new Set<() => void>();
  app.addHook('preClose', async () => { for (const stop of [...live]) stop(); });

  app.get<{ Params: { id: number }; Querystring: LogQuery }>('/api/containers/:id/logs', {
    preHandler: app.authenticate,
    schema: {
      summary: "Stream a container's stdout/stderr (tail, since, follow; text or SSE)",
      tags: ['containers'],
      params: idParams(),
      querystring: querySchema(false),
    },
  }, async (req, reply) => {
    const { rows: [c] } = await app.db.query<ContainerRow>('SELECT * FROM containers WHERE id = $1 AND user_id = $2', [req.params.id, req.user!.id]);
    if (!c) throw notFound('container');
    if (!c.docker_id) throw new ApiError(409, 'no_logs_yet', `container ${c.id} has no Docker container yet (status ${c.status})`);
    return serve(req, reply, { single: c, list: async () => [c] });
  });

  app.get<{ Params: { host: string }; Querystring: LogQuery }>('/api/apps/:host/logs', {
    preHandler: app.authenticate,
    schema: {
      summary: "Stream the logs of every instance of an app, each line prefixed by its container",
      tags: ['apps'],
      params: { type: 'object', required: ['host'], properties: { host: { type: 'string', minLength: 1, maxLength: 300 } } },
      querystring: querySchema(true),
    },
  }, async (req, reply) => {
    let host: string;
    try { host = normalizeHost(req.params.host); } catch { throw notFound('app'); }
    const userId = req.user!.id;
    const { rows: [owned] } = await app.db.query('SELECT 1 FROM images WHERE user_id = $1 AND app_hostname = $2 LIMIT 1', [userId, host]);
    if (!owned) throw notFound('app');
    const only = req.query.container;
    const list = async () => (await app.db.query<ContainerRow>(
      `SELECT c.* FROM containers c JOIN images i ON i.id = c.image_id
        WHERE c.user_id = $1 AND i.user_id = $1 AND i.app_hostname = $2 AND c.docker_id IS NOT NULL
          AND ($3::bigint IS NULL OR c.id = $3) ORDER BY c.id`, [userId, host, only ?? null])).rows;
    if (only !== undefined && (await list()).length === 0) throw notFound('container');
    return serve(req, reply, { list });
  });

  async function serve(req: FastifyRequest<{ Querystring: LogQuery }>, reply: FastifyReply, src: { single?: ContainerRow; list: () => Promise<ContainerRow[]> }) {
    const q = req.query;
    const follow = on(q.follow);
    const stamps = on(q.timestamps);
    const since = q.since !== undefined ? parseSince(q.since) : undefined;
    const tail = q.tail ?? (src.single ? undefined : APP_DEFAULT_TAIL);
    const sse = /text\/event-stream/.test(String(req.headers.accept ?? ''));
    const prefix = !src.single;
    const initial = await src.list();
    if (initial.length > MAX_STREAMS) throw new ApiError(409, 'too_many_instances', `the app has ${initial.length} instances; read them with container=ID`);
    const startedAt = Date.now() / 1000;

    reply.hijack();
    const res: ServerResponse = reply.raw;
    res.writeHead(200, {
      'content-type': sse ? 'text/event-stream; charset=utf-8' : 'text/plain; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
      'x-request-id': String(req.id),
    });
    res.flushHeaders();
    // a follow can be silent for hours: TCP keep-alive finds a client that vanished without a FIN
    if (follow) req.raw.socket?.setKeepAlive(true, 30_000);

    const streams = new Set<LogStream>();
    let done = false;
    let paused = false;
    let poll: NodeJS.Timeout | undefined;
    let beat: NodeJS.Timeout | undefined;
    const stop = () => {
      if (done) return;
      done = true;
      live.delete(stop);
      if (poll) clearInterval(poll);
      if (beat) clearInterval(beat);
      for (const s of streams) s.close();
      streams.clear();
      if (!res.writableEnded) res.end();
    };
    live.add(stop);
    res.on('close', stop);
    res.on('drain', () => { if (paused) { paused = false; for (const s of streams) s.resume(); } });

    const write = (c: ContainerRow, l: LogLine) => {
      if (done) return;
      const ok = sse
        ? res.write(`event: log\ndata: ${JSON.stringify({ container_id: c.id, image_id: c.image_id, stream: l.stream, time: l.time || null, line: l.text })}\n\n`)
        : res.write(`${prefix ? `[${c.id}] ` : ''}${stamps && l.time ? `${l.time} ` : ''}${l.text}\n`);
      if (!ok && !paused) { paused = true; for (const s of streams) s.pause(); }
    };
    const end = (status: string) => {
      if (done) return;
      if (sse) res.write(`event: end\ndata: ${JSON.stringify({ status })}\n\n`);
      stop();
    };
    const fail = (e: Error) => {
      req.log.warn({ err: e.message }, 'container logs unavailable');
      if (done) return;
      if (sse) res.write(`event: error\ndata: ${JSON.stringify({ message: e.message })}\n\n`);
      else res.write(`berth: logs unavailable: ${e.message}\n`);
      stop();
    };

    try {
      // backlog: every instance's last lines, merged by time
      const last = new Map<number, string>();
      const backlog: { c: ContainerRow; l: LogLine }[] = [];
      await Promise.all(initial.map(async (c) => {
        const s = await containerLogs(app.runtime, c.docker_id!, { follow: false, tail, since });
        if (!s || done) { s?.close(); return; }
        streams.add(s);
        await new Promise<void>((resolve) => {
          s.onLine((l) => { backlog.push({ c, l }); last.set(c.id, l.time); });
          s.onEnd(() => { streams.delete(s); resolve(); });
        });
      }));
      if (done) return;
      if (initial.length > 1) backlog.sort((a, b) => (a.l.time < b.l.time ? -1 : a.l.time > b.l.time ? 1 : 0));
      for (const { c, l } of backlog) write(c, l);
      if (!follow) return end('complete');

      // follow: each instance from where its backlog ended; new instances as they appear
      const attached = new Set<number>();
      const attach = async (c: ContainerRow, from: number) => {
        attached.add(c.id);
        const s = await containerLogs(app.runtime, c.docker_id!, { follow: true, since: from });
        if (!s) return;
        if (done) { s.close(); return; }
        streams.add(s);
        if (paused) s.pause();
        const after = last.get(c.id) ?? '';
        s.onLine((l) => { if (!after || l.time > after) write(c, l); });
        s.onEnd(() => {
          streams.delete(s);
          if (src.single) end('container_stopped'); // like `docker logs -f`: a stopped container ends the stream
        });
      };
      for (const c of initial) await attach(c, since ?? startedAt);
      if (sse) beat = setInterval(() => { if (!done) res.write(': ping\n\n'); }, 15_000);
      if (!src.single) {
        poll = setInterval(() => {
          src.list().then(async (rows) => {
            for (const c of rows) {
              if (done || attached.has(c.id) || streams.size >= MAX_STREAMS) continue;
              await attach(c, Math.max(since ?? 0, new Date(c.created_at).getTime() / 1000 - 1));
            }
          }).catch((e: Error) => req.log.warn({ err: e.message }, 'could not look for new instances'));
        }, 2_000);
        poll.unref();
      }
    } catch (e) {
      fail(e as Error);
    }
  }
}
