import type { FastifyInstance } from 'fastify';
import { latestMigrationApplied } from '../db/migrate.js';

/** `/healthz` (process up), `/readyz` (database reachable and migrated), `/metrics` (Prometheus text). */
export default async function healthPlugin(app: FastifyInstance, opts: { isDraining: () => boolean }): Promise<void> {
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

  app.get('/metrics', async (_req, reply) => {
    const body = await app.metrics.registry.metrics();
    return reply.type(app.metrics.registry.contentType).send(body);
  });
}
