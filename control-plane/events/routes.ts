import type { FastifyInstance } from 'fastify';
import { MAX_ID, int } from '../http/schemas.js';
import { dateTime, errorResponses, idSchema, nullableInteger, nullableString, object } from '../http/responses.js';
import { listEvents } from './outbox.js';
import { normalizeHost } from '../../shared/hostname.js';
import { badRequest } from '../http/errors.js';

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

/**
 * `GET /api/events?after=ID&limit=N` — the caller's events, oldest first; `app=HOST` for one app's;
 * `tail=N` for the newest N (a starting point for `berth events`, which then follows with `after`).
 */
export async function eventRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Querystring: { after?: number; limit?: number; app?: string; tail?: number } }>('/api/events', {
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
  }, async (req) => {
    const q = req.query;
    let host: string | undefined;
    if (q.app !== undefined) {
      host = normalizeHost(q.app);
      if (host === '') throw badRequest(`app "${q.app.slice(0, 80)}" is not a hostname`);
    }
    const events = await listEvents(app.db, req.user!.id, q.after ?? 0, q.limit ?? 100, { app: host, tail: q.tail });
    return { events, next_after: events.length ? events[events.length - 1].id : q.tail !== undefined ? 0 : q.after ?? 0 };
  });
}
