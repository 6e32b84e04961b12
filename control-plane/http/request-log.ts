import type { FastifyInstance } from 'fastify';

/**
 * On a terminal (logFormat() === 'pretty'), Fastify's two lines per request ("incoming request",
 * "request completed" — the second without the URL) become one: `GET /api/apps → 200 (3 ms)`.
 * The proxies' internal calls and probes (`/v1/…`, /healthz, /readyz, /metrics) only show when
 * they fail. In JSON mode nothing changes: Fastify's own request logs stay, for log shippers.
 */
const QUIET = /^\/(v1\/|healthz|readyz|metrics)/;

export function installRequestLog(app: FastifyInstance): void {
  app.addHook('onResponse', async (req, reply) => {
    const url = req.url.split('?')[0];
    const status = reply.statusCode;
    if (QUIET.test(url) && status < 400) return;
    const line = `${req.method} ${url} → ${status} (${Math.round(reply.elapsedTime)} ms)`;
    if (status >= 500) req.log.error(line);
    else if (status >= 400 && QUIET.test(url)) req.log.warn(line);
    else req.log.info(line);
  });
}
