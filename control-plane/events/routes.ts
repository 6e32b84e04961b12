import type { FastifyInstance } from 'fastify';
import { MAX_ID, int } from '../http/schemas.js';
import { dateTime, errorResponses, idSchema, nullableInteger, nullableString, object } from '../http/responses.js';
import { hasHeldBack, listEvents } from './outbox.js';
import { normalizeHost } from '../../shared/hostname.js';
import { ApiError, badRequest } from '../http/errors.js';
import { EventWaiters } from './waiters.js';
import { streamLimits } from '../http/stream-limits.js';
import type { Logger } from '../../shared/logging.js';

/** An `EventRecord` (outbox.ts): the columns `listEvents` selects; `payload` is free-form per type. */
export const eventSchema = object({
  id: idSchema,
  type: { type: 'string', description: 'e.g. image.building, container.started, app.deleted' },
  user_id: idSchema,
  image_id: nullableInteger,
  container_id: nullableInteger,
  app_hostname: nullableString,
  payload: { type: 'object', additionalProperties: true, description: 'what happened; its properties depend on the type' },
  created_at: dateTime,
});

/** The longest `wait` of a long poll, in seconds (the CLI's requests wait 25). */
export const MAX_EVENT_WAIT_S = 30;

/**
 * `GET /api/events?after=ID&limit=N` — the caller's events, oldest first; `app=HOST` for one app's;
 * `tail=N` for the newest N (a starting point for `berth events`, which then follows with `after`).
 * `wait=S` makes it a long poll: with nothing after `after` yet, the answer waits up to S seconds
 * for the next event (events/waiters.ts), so a follower sees it at once instead of at its next poll.
 */
export async function eventRoutes(app: FastifyInstance): Promise<void> {
  const waiters = new EventWaiters(app.db.options.connectionString!, (app.log as unknown as Logger).child({ component: 'events' }));
  waiters.start();
  // (before the server closes: a held poll answers at once instead of holding the close up)
  app.addHook('preClose', async () => { await waiters.close(); });
  app.get<{ Querystring: { after?: number; limit?: number; app?: string; tail?: number; wait?: number } }>('/api/events', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Your lifecycle events after an id (or the newest N), oldest first; of one app with app=HOST',
      tags: ['events'],
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          after: int(0, MAX_ID, { default: 0 }),
          limit: int(1, 1000, { default: 100 }),
          app: { type: 'string', minLength: 1, maxLength: 300, description: "only this app's events (its hostname)" },
          tail: { ...int(1, 1000), description: 'the newest N events instead of those after `after`' },
          wait: { ...int(0, MAX_EVENT_WAIT_S, { default: 0 }), description: 'a long poll: with no event after `after` yet, wait up to this many seconds for the next one (not with `tail`)' },
        },
      },
      response: {
        200: object({
          events: { type: 'array', items: eventSchema },
          next_after: { type: 'integer', minimum: 0, description: 'pass as ?after= for the next page: the last id; with nothing listed, the after given (0 for tail)' },
        }),
        ...errorResponses,
      },
    },
  }, async (req, reply) => {
    const q = req.query;
    let host: string | undefined;
    if (q.app !== undefined) {
      host = normalizeHost(q.app);
      if (host === '') throw badRequest(`app "${q.app.slice(0, 80)}" is not a hostname`);
    }
    const waitS = q.wait ?? 0;
    if (waitS > 0 && q.tail !== undefined) throw badRequest('wait is for following with after=, not with tail');
    const user = req.user!.id;
    const list = () => listEvents(app.db, user, q.after ?? 0, q.limit ?? 100, { app: host, tail: q.tail });
    // (marked before the list: an event notified while it runs ends the wait at once)
    let mark = waiters.mark(user);
    let events = await list();
    if (events.length === 0 && waitS > 0) {
      // a held poll is a stream: the per-user, per-address and total stream caps count it; past
      // them the answer comes at once, as without wait
      let release: (() => void) | null = null;
      try {
        release = streamLimits(app).acquire(user, 'events poll', req.ip);
      } catch (e) {
        if (!(e instanceof ApiError) || e.status !== 429) throw e;
      }
      if (release !== null) {
        const deadline = Date.now() + waitS * 1000;
        const gone = new AbortController();
        const onClose = () => gone.abort();
        reply.raw.once('close', onClose);
        // (a client gone before the listener was there)
        if (req.raw.socket?.destroyed) gone.abort();
        try {
          for (let left = deadline - Date.now(); events.length === 0 && left > 0 && !gone.signal.aborted; left = deadline - Date.now()) {
            // an event committed but held back by an older transaction still running is looked
            // for again shortly: that one's end sends no notification
            const held = await hasHeldBack(app.db, user, host);
            const reason = await waiters.wait(user, held ? Math.min(left, 250) : left, gone.signal, mark);
            if (reason === 'closed') break;
            mark = waiters.mark(user);
            events = await list();
          }
        } finally {
          reply.raw.off('close', onClose);
          release();
        }
      }
    }
    return { events, next_after: events.length ? events[events.length - 1].id : q.tail !== undefined ? 0 : q.after ?? 0 };
  });
}
