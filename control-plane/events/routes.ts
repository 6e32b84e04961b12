import type { FastifyInstance } from 'fastify';
import { MAX_ID, int } from '../http/schemas.js';
import { listEvents } from './outbox.js';

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
    },
  }, async (req) => {
    const events = await listEvents(app.db, req.user!.id, req.query.after ?? 0, req.query.limit ?? 100);
    return { events, next_after: events.length ? events[events.length - 1].id : req.query.after ?? 0 };
  });
}
