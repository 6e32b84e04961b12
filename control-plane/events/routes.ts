import type { FastifyInstance } from 'fastify';
import { listEvents } from './outbox.js';

/** `GET /api/events?after=ID&limit=N` — the caller's events, oldest first. */
export async function eventRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Querystring: { after?: number; limit?: number } }>('/api/events', {
    preHandler: app.authenticate,
    schema: {
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          after: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 0 },
          limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
        },
      },
    },
  }, async (req) => {
    const events = await listEvents(app.db, req.user!.id, req.query.after ?? 0, req.query.limit ?? 100);
    return { events, next_after: events.length ? events[events.length - 1].id : req.query.after ?? 0 };
  });
}
