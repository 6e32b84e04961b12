import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import { normalizeHost } from '../../shared/hostname.js';
import { ApiError, badRequest, notFound } from '../http/errors.js';
import { hostParams, idParams, int } from '../http/schemas.js';
import type { ContainerRow } from '../images/repo.js';
import { streamLimits } from '../http/stream-limits.js';
import { envNumber } from '../env.js';
import { parseTimeQuery, TIME_QUERY_FORMS, timeQuerySchema } from '../http/time-query.js';
import { containerLogs, type LogLine, type LogStream } from '../runtime/logs.js';

/**
 * App logs: a container's stdout/stderr, or every instance of an app, from Docker.
 *
 * - `GET /api/containers/:id/logs` and `GET /api/apps/:host/logs` (each line prefixed by its
 *   container), query `tail` (lines per container, at most 10000; default 1000 for one container,
 *   200 per container for an app), `since` (`10m`, `2h`, `30s`, `1d` up to ten years, unix seconds
 *   or an RFC 3339 time: http/time-query.ts), `follow=1`, `timestamps=1`, and for an app `container=ID`.
 * - Plain chunked text by default; `Accept: text/event-stream` gives SSE: `event: log` with
 *   `{container_id, image_id, stream, time, line}` per line, `event: end` when a non-following
 *   read is complete (and when a followed container stops).
 * - Memory per request is bounded: one container's lines go straight through, and a client that
 *   reads slowly pauses the Docker streams (backpressure). The backlog of an app with several
 *   instances is merged by Docker's timestamps from at most 2 MiB of lines (the oldest beyond are
 *   skipped, and the output says so); while following, new instances (scale-up, a new revision)
 *   are picked up within two seconds (one query per app shared by all its followers, InstancePolls).
 * - Every read (follow or not) counts against the per-user and global caps on streams
 *   (http/stream-limits.ts): 429 past them, released when the response closes. A client that
 *   leaves lines unread for BERTH_LOG_STALL_MS (60 s) is disconnected: a read nobody reads holds
 *   its backlog and its Docker streams.
 * - Another user's container or app answers 404. A client that goes away closes every Docker
 *   stream it had (runtime/logs.ts counts them).
 */

interface LogQuery { tail?: number; since?: string; follow?: string; timestamps?: string; container?: number }

/** Lines per container a request may ask for, and the defaults. */
export const MAX_TAIL = 10_000;
export const DEFAULT_TAIL = 1000;
const APP_DEFAULT_TAIL = 200;
/** The merged backlog of an app's instances holds at most this much text; older lines are skipped. */
export const MAX_BACKLOG_BYTES = 2 * 1024 * 1024;

const BOOL = { type: 'string', enum: ['0', '1', 'true', 'false', ''] } as const;
const querySchema = (app: boolean) => ({
  type: 'object',
  additionalProperties: false,
  properties: {
    tail: { ...int(0, MAX_TAIL), description: `last N lines per container (default ${DEFAULT_TAIL} for a container, ${APP_DEFAULT_TAIL} per instance of an app)` },
    since: { ...timeQuerySchema, description: `only lines after: ${TIME_QUERY_FORMS}; at most a day ahead` },
    follow: { ...BOOL, description: '1: keep streaming new lines' },
    timestamps: { ...BOOL, description: '1: prefix each text line with its Docker timestamp' },
    ...(app ? { container: { ...int(1, Number.MAX_SAFE_INTEGER), description: 'only this instance (a container id of the app)' } } : {}),
  },
});

const on = (v: string | undefined) => v === '1' || v === 'true' || v === '';
/** Instances of an app beyond which a single request refuses (each is one Docker stream). */
const MAX_STREAMS = 100;

/** `since` (http/time-query.ts: a duration, unix seconds or RFC 3339) → unix seconds; at most a day ahead, else 400. */
export function parseSince(raw: string, now = Date.now()): number {
  return parseTimeQuery('since', raw, { now, maxAheadMs: 86_400_000 }) / 1000;
}

export default async function logRoutes(app: FastifyInstance): Promise<void> {
  // live follows end when the control plane closes (app.close() would wait for them otherwise)
  const live = new Set<() => void>();
  app.addHook('preClose', async () => { for (const stop of [...live]) stop(); });
  const limits = streamLimits(app);
  const stallMs = envNumber('BERTH_LOG_STALL_MS', 60_000, 100, 86_400_000, true);
  const polls = new InstancePolls((e) => app.log.warn({ err: e.message }, 'could not look for new instances'));
  app.addHook('onClose', async () => polls.close());

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
      params: hostParams,
      querystring: querySchema(true),
    },
  }, async (req, reply) => {
    const host = normalizeHost(req.params.host);
    const userId = req.user!.id;
    // (a follow of a deleted app ends: it polled the database every 2 s, and held a stream slot, for good)
    const gone = async () => (await app.db.query('SELECT 1 FROM images WHERE user_id = $1 AND app_hostname = $2 LIMIT 1', [userId, host])).rowCount === 0;
    if (await gone()) throw notFound('app');
    const only = req.query.container;
    const list = async () => (await app.db.query<ContainerRow>(
      `SELECT c.* FROM containers c JOIN images i ON i.id = c.image_id
        WHERE c.user_id = $1 AND i.user_id = $1 AND i.app_hostname = $2 AND c.docker_id IS NOT NULL
          AND ($3::bigint IS NULL OR c.id = $3) ORDER BY c.id`, [userId, host, only ?? null])).rows;
    if (only !== undefined && (await list()).length === 0) throw notFound('container');
    return serve(req, reply, { list, gone, pollKey: `${userId}\n${host}\n${only ?? ''}` });
  });

  async function serve(req: FastifyRequest<{ Querystring: LogQuery }>, reply: FastifyReply, src: { single?: ContainerRow; list: () => Promise<ContainerRow[]>; gone?: () => Promise<boolean>; pollKey?: string }) {
    const q = req.query;
    const follow = on(q.follow);
    const stamps = on(q.timestamps);
    const since = q.since !== undefined ? parseSince(q.since) : undefined;
    const tail = q.tail ?? (src.single ? DEFAULT_TAIL : APP_DEFAULT_TAIL);
    const sse = /text\/event-stream/.test(String(req.headers.accept ?? ''));
    const prefix = !src.single;
    const initial = await src.list();
    if (initial.length > MAX_STREAMS) throw new ApiError(409, 'too_many_instances', `the app has ${initial.length} instances; read them with container=ID`);
    const release = limits.acquire(req.user!.id, follow ? 'log follow' : 'log read', req.ip);
    const startedAt = Date.now() / 1000;

    reply.hijack();
    const res: ServerResponse = reply.raw;
    res.writeHead(200, {
      'content-type': sse ? 'text/event-stream; charset=utf-8' : 'text/plain; charset=utf-8',
      'x-content-type-options': 'nosniff',
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
    let unsubscribe: (() => void) | undefined;
    let beat: NodeJS.Timeout | undefined;
    let stall: NodeJS.Timeout | undefined;
    /** the pending drained() (resolved by drain, close, or stop) */
    let wake: (() => void) | undefined;
    const stop = () => {
      if (done) return;
      done = true;
      release();
      live.delete(stop);
      unsubscribe?.();
      if (beat) clearInterval(beat);
      if (stall) clearTimeout(stall);
      wake?.();
      for (const s of streams) s.close();
      streams.clear();
      if (!res.writableEnded) res.end();
    };
    live.add(stop);
    res.on('close', stop);
    // a client that left while the request was checked: its close came before this listener
    if (res.destroyed || req.raw.socket?.destroyed) { stop(); return; }
    res.on('drain', () => {
      if (stall) { clearTimeout(stall); stall = undefined; }
      if (paused) { paused = false; for (const s of streams) s.resume(); }
    });
    // lines left unread that long: the client is gone or hostile; what it holds is freed
    const stalled = () => {
      req.log.info({ stallMs }, 'log reader read nothing for too long; disconnected');
      stop();
      res.destroy();
    };

    /** Writes a line; false when the response buffer is full (the Docker streams are paused until it drains). */
    const write = (c: ContainerRow, l: LogLine): boolean => {
      if (done) return true;
      const ok = sse
        ? res.write(`event: log\ndata: ${JSON.stringify({ container_id: c.id, image_id: c.image_id, stream: l.stream, time: l.time || null, line: l.text })}\n\n`)
        : res.write(`${prefix ? `[${c.id}] ` : ''}${stamps && l.time ? `${l.time} ` : ''}${l.text}\n`);
      if (!ok && !paused) { paused = true; for (const s of streams) s.pause(); }
      if (!ok && !stall) { stall = setTimeout(stalled, stallMs); stall.unref(); }
      return ok;
    };
    // resolves on drain, on close, or when the read stops (a stall, or a client gone before)
    const drained = () => new Promise<void>((resolve) => {
      if (done || res.destroyed) return resolve();
      const go = () => { res.off('drain', go); res.off('close', go); wake = undefined; resolve(); };
      wake = go;
      res.on('drain', go);
      res.on('close', go);
    });
    /** A line about the logs, not of them: an SSE `notice`, or `berth: …` in text. */
    const notice = (note: string) => {
      res.write(sse ? `event: notice\ndata: ${JSON.stringify({ message: note })}\n\n` : `berth: ${note}\n`);
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
      const last = new Map<number, string>();
      const read = async (c: ContainerRow, onLine: (l: LogLine) => void) => {
        const s = await containerLogs(app.runtime, c.docker_id!, { follow: false, tail, since });
        if (!s || done) { s?.close(); return; }
        streams.add(s);
        if (paused) s.pause();
        await new Promise<void>((resolve) => {
          s.onLine((l) => { last.set(c.id, l.time); onLine(l); });
          s.onEnd(() => { streams.delete(s); resolve(); });
        });
      };
      // an instance its app crashed was replaced under the same id, and Docker's log with it: what
      // the last run said as it ended (kept by the reconcile loop) comes first, as a notice
      for (const c of initial) {
        if (done || !c.last_exit || c.restart_count === 0) continue;
        // (not when the reader asked for lines after this run began: that end is older)
        if (since !== undefined && c.started_at !== null && new Date(c.started_at).getTime() / 1000 < since) continue;
        notice(`container ${c.id} was restarted ${c.restart_count} time(s); its last run ended: ${c.last_exit}`);
      }
      if (initial.length <= 1) {
        // one container: its lines go straight through, paused while the client is behind
        if (initial[0]) await read(initial[0], (l) => write(initial[0], l));
      } else {
        // several: each instance's last lines, merged by time from a bounded backlog
        const merged = await mergedBacklog(initial, read);
        if (merged.skipped && !done) {
          notice(`${merged.skipped} older lines skipped: an app's merged backlog is at most ${MAX_BACKLOG_BYTES / 1024 / 1024} MiB (narrow it with tail, since or container)`);
        }
        for (const { c, l } of merged.lines) {
          if (done) return;
          if (!write(c, l)) await drained();
        }
      }
      if (done) return;
      if (!follow) return end('complete');

      // follow: each instance from where its backlog ended; new instances as they appear
      const attached = new Set<number>();
      const attach = async (c: ContainerRow, from: number) => {
        attached.add(c.id);
        let s: Awaited<ReturnType<typeof containerLogs>>;
        try {
          s = await containerLogs(app.runtime, c.docker_id!, { follow: true, since: from });
        } catch (e) {
          attached.delete(c.id); // tried again at the next look (Docker away for a moment)
          throw e;
        }
        if (!s) {
          // gone between its backlog and now: a container's follow ends, as it would have
          if (src.single) end('container_stopped');
          return;
        }
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
      // (from when the backlog was read, not from `since`: that was the backlog's to show, and
      // reading it again would send hours of lines that `tail` left out, or split and drop them here)
      for (const c of initial) await attach(c, Math.max(since ?? 0, startedAt));
      if (sse) beat = setInterval(() => { if (!done) res.write(': ping\n\n'); }, 15_000);
      if (!src.single) {
        unsubscribe = polls.subscribe(src.pollKey ?? String(req.id), src.list, async (rows) => {
          if (rows.length === 0 && src.gone !== undefined && !done && (await src.gone())) {
            end('app_deleted');
            return;
          }
          for (const c of rows) {
            if (done || attached.has(c.id) || streams.size >= MAX_STREAMS) continue;
            await attach(c, Math.max(since ?? 0, new Date(c.created_at).getTime() / 1000 - 1));
          }
        });
      }
    } catch (e) {
      fail(e as Error);
    }
  }
}

/**
 * Followers of an app look for its new instances every two seconds: one query per app (per user
 * and `container` filter, which is what the query depends on), shared by every follower of it,
 * started with the first and stopped with the last.
 */
export class InstancePolls {
  static readonly INTERVAL_MS = 2_000;
  private readonly polls = new Map<string, { timer: NodeJS.Timeout; subs: Set<(rows: ContainerRow[]) => Promise<void>> }>();

  constructor(private readonly onError: (e: Error) => void) {}

  subscribe(key: string, list: () => Promise<ContainerRow[]>, fn: (rows: ContainerRow[]) => Promise<void>): () => void {
    let p = this.polls.get(key);
    if (!p) {
      const subs = new Set<(rows: ContainerRow[]) => Promise<void>>();
      let busy = false;
      const timer = setInterval(() => {
        if (busy) return;
        busy = true;
        list()
          .then((rows) => Promise.all([...subs].map((f) => f(rows).catch(this.onError))))
          .catch(this.onError)
          .finally(() => { busy = false; });
      }, InstancePolls.INTERVAL_MS);
      timer.unref();
      p = { timer, subs };
      this.polls.set(key, p);
    }
    const poll = p;
    poll.subs.add(fn);
    return () => {
      poll.subs.delete(fn);
      if (poll.subs.size === 0 && this.polls.get(key) === poll) { clearInterval(poll.timer); this.polls.delete(key); }
    };
  }

  close(): void {
    for (const p of this.polls.values()) clearInterval(p.timer);
    this.polls.clear();
  }
}

/**
 * The backlogs of an app's instances, merged by Docker's timestamps, from at most
 * MAX_BACKLOG_BYTES of text: past it the oldest line of all is dropped (and counted), so memory
 * stays bounded however many instances and lines were asked for.
 */
async function mergedBacklog(
  containers: ContainerRow[],
  read: (c: ContainerRow, onLine: (l: LogLine) => void) => Promise<void>,
): Promise<{ lines: { c: ContainerRow; l: LogLine }[]; skipped: number }> {
  const size = (l: LogLine) => l.text.length + l.time.length + 16;
  const queues = containers.map((c) => ({ c, lines: [] as (LogLine | undefined)[] }));
  let bytes = 0;
  let skipped = 0;
  // The oldest lines go, across instances, until the backlog is within MAX_BACKLOG_BYTES. Done
  // in one sorted pass each time it reaches twice that (and once at the end), not one scan of
  // every instance per line dropped: a hundred instances' 10,000 lines each were 10^8 compares
  // on the API's event loop.
  const trim = () => {
    const all: { q: (typeof queues)[number]; i: number }[] = [];
    for (const q of queues) for (let i = 0; i < q.lines.length; i++) all.push({ q, i });
    all.sort((a, b) => {
      const x = a.q.lines[a.i]!.time;
      const y = b.q.lines[b.i]!.time;
      return x < y ? -1 : x > y ? 1 : 0;
    });
    for (let k = 0; k < all.length && bytes > MAX_BACKLOG_BYTES; k++) {
      const { q, i } = all[k];
      bytes -= size(q.lines[i]!);
      q.lines[i] = undefined;
      skipped++;
    }
    for (const q of queues) q.lines = q.lines.filter((l) => l !== undefined);
  };
  await Promise.all(queues.map((q) => read(q.c, (l) => {
    q.lines.push(l);
    bytes += size(l);
    if (bytes > 2 * MAX_BACKLOG_BYTES) trim();
  })));
  if (bytes > MAX_BACKLOG_BYTES) trim();
  const lines: { c: ContainerRow; l: LogLine }[] = [];
  for (const q of queues) for (const l of q.lines) lines.push({ c: q.c, l: l! });
  lines.sort((a, b) => (a.l.time < b.l.time ? -1 : a.l.time > b.l.time ? 1 : 0));
  return { lines, skipped };
}
