import type { FastifyInstance } from 'fastify';
import { latestMigrationApplied } from '../db/migrate.js';
import { unauthorized } from './errors.js';
import { errorResponses, object } from './responses.js';
import { isBearer, type BearerTokens } from './tokens.js';

const readySchema = object({
  status: { type: 'string', enum: ['ready', 'not_ready'] },
  checks: object({
    database: { type: 'string', description: '"ok", "migrations pending" or "unreachable: …"' },
    shutdown: { type: 'string', description: '"draining" while the control plane stops' },
  }, ['shutdown']),
});

/**
 * `/healthz` (process up) and `/readyz` (database reachable and migrated), open to anyone;
 * `/metrics` (Prometheus text) only with the metrics token: its gauges name every tenant's apps.
 */
export default async function healthPlugin(app: FastifyInstance, opts: { isDraining: () => boolean; metricsTokens: BearerTokens }): Promise<void> {
  app.get('/healthz', {
    schema: { summary: 'Liveness: the process is up', response: { 200: object({ status: { type: 'string', enum: ['ok'] } }) } },
  }, async () => ({ status: 'ok' }));

  app.get('/readyz', {
    schema: {
      summary: 'Readiness: the database is reachable and migrated, and the process is not shutting down',
      response: { 200: readySchema, 503: { ...readySchema, description: 'not ready (same shape)' } },
    },
  }, async (req, reply) => {
    const checks: Record<string, string> = {};
    let ok = true;
    if (opts.isDraining()) { checks.shutdown = 'draining'; ok = false; }
    try {
      checks.database = (await latestMigrationApplied(app.db)) ? 'ok' : 'migrations pending';
      if (checks.database !== 'ok') ok = false;
    } catch (e) {
      // anyone may ask: the driver's message (host, port, user) goes to the log, not the answer
      req.log.warn({ err: (e as Error).message }, 'readiness: database unreachable');
      checks.database = 'unreachable';
      ok = false;
    }
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not_ready', checks });
  });

  app.get('/metrics', {
    // Prometheus text, sent as a string with its own content type: never serialized, the content
    // type is documented only
    schema: {
      summary: 'Prometheus metrics (Authorization: Bearer <metrics token>)',
      response: {
        200: { content: { 'text/plain': { schema: { type: 'string', description: 'Prometheus text exposition format 0.0.4' } } } },
        ...errorResponses,
      },
    },
    onRequest: async (req) => {
      if (!isBearer(req.headers.authorization, opts.metricsTokens)) throw unauthorized('a valid metrics token is required (Authorization: Bearer $BERTH_METRICS_TOKEN, or the one in <data-dir>/metrics-token)');
    },
  }, async (_req, reply) => {
    const body = await app.metrics.registry.metrics();
    return reply.type(app.metrics.registry.contentType).send(body);
  });
}
