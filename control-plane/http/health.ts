import type { FastifyInstance } from 'fastify';
import { latestMigrationApplied } from '../db/migrate.js';
import { unauthorized } from './errors.js';
import { isBearer } from './tokens.js';

/**
 * `/healthz` (process up) and `/readyz` (database reachable and migrated), open to anyone;
 * `/metrics` (Prometheus text) only with the metrics token: its gauges name every tenant's apps.
 */
export default async function healthPlugin(app: FastifyInstance, opts: { isDraining: () => boolean; metricsToken: string }): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const checks: Record<string, string> = {};
    let ok = true;
    if (opts.isDraining()) { checks.shutdown = 'draining'; ok = false; }
    try {
      checks.database = (await latestMigrationApplied(app.db)) ? 'ok' : 'migrations pending';
      if (checks.database !== 'ok') ok = false;
    } catch (e) {
      checks.database = `unreachable: ${(e as Error).message}`;
      ok = false;
    }
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not_ready', checks });
  });

  app.get('/metrics', {
    onRequest: async (req) => {
      if (!isBearer(req.headers.authorization, opts.metricsToken)) throw unauthorized('a valid metrics token is required (Authorization: Bearer $BERTH_METRICS_TOKEN, or the one in <data-dir>/metrics-token)');
    },
  }, async (_req, reply) => {
    const body = await app.metrics.registry.metrics();
    return reply.type(app.metrics.registry.contentType).send(body);
  });
}
