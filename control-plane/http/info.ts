import { UsageError } from '../../shared/cli/args.js';
import type { FastifyInstance } from 'fastify';
import fp from './fp.js';
import { nullableString, object } from './responses.js';

/**
 * `GET /api/info` (no login): what a client needs to print URLs — the proxy's public URL (set by
 * `berth up` to the proxy it starts, or `BERTH_PUBLIC_URL` for a proxy elsewhere) and where the
 * API documents itself. `berth deploy` builds `http://HOST:PORT/` and `PROXY/apps/HOST/` from it.
 */
export interface PublicInfo {
  /** the proxy as users reach it, e.g. http://127.0.0.1:8080; unknown → null */
  proxyUrl: string | null;
}

declare module 'fastify' {
  interface FastifyInstance {
    publicInfo: PublicInfo;
  }
}

async function infoRoutes(app: FastifyInstance): Promise<void> {
  const fromEnv = process.env.BERTH_PUBLIC_URL?.trim().replace(/\/+$/, '') || undefined;
  // a typo must stop the control plane, not quietly give clients no proxy URL
  if (fromEnv !== undefined && !/^https?:\/\/[^\s/]+$/.test(fromEnv)) {
    throw new UsageError(`BERTH_PUBLIC_URL "${fromEnv}" must be an http(s) origin like https://apps.example.com`);
  }
  app.decorate('publicInfo', { proxyUrl: fromEnv ?? null });
  app.get('/api/info', {
    schema: {
      summary: "The platform's public URLs: the proxy apps answer on, and the API docs",
      tags: ['discovery'],
      response: {
        200: object({
          name: { type: 'string', description: '"berth"' },
          proxy_url: { ...nullableString, description: 'the proxy as users reach it, e.g. http://127.0.0.1:8080; null: unknown' },
          app_domains: { type: 'array', items: { type: 'string' }, description: 'DNS names new apps must be under (a new app is NAME.DOMAIN); empty: any hostname' },
          max_upload_bytes: { type: 'integer', description: 'the largest source archive an upload may be (413 past it): a client can say so before it sends one' },
          docs_url: { type: 'string' },
          openapi_url: { type: 'string' },
        }),
      },
    },
  }, async () => ({ name: 'berth', proxy_url: app.publicInfo.proxyUrl, app_domains: app.config.appDomains, max_upload_bytes: app.config.maxUploadBytes, docs_url: '/docs', openapi_url: '/docs/json' }));
}

export default fp(infoRoutes, 'berth-info');
