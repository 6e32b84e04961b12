import type { FastifyInstance } from 'fastify';
import { MAX_ID, int } from '../http/schemas.js';
import { dateTime, errorResponses, idSchema, nullableInteger, nullableString, object } from '../http/responses.js';
import { listEvents } from './outbox.js';

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

/** `GET /api/events?after=ID&limit=N` — the caller's events, oldest first. */
export async function eventRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Querystring: { after?: number; limit?: number } }>('/api/events', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Your lifecycle events after an id, oldest first',
      tags: ['events'],
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          after: int(0, MAX_ID, { default: 0 }),
          limit: int(1, 1000, { default: 100 }),
        },
      },
      response: {
        200: object({
          events: { type: 'array', items: eventSchema },
          next_after: { type: 'integer', minimum: 0, description: 'pass as ?after= for the next page (the last id, or the after given)' },
        }),
        ...errorResponses,
      },
    },
  }, async (req) => {
    const events = await listEvents(app.db, req.user!.id, req.query.after ?? 0, req.query.limit ?? 100);
    return { events, next_after: events.length ? events[events.length - 1].id : req.query.after ?? 0 };
  });
}
