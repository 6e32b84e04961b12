import type { FastifyInstance } from 'fastify';
import { traceIdOf } from '../../shared/trace.js';

/**
 * API calls that carry a W3C `traceparent` (the proxy adds one to every request it forwards; CLIs
 * and services may send their own) log its trace id on every line of the request.
 */
export function installTraceLogging(app: FastifyInstance): void {
  app.addHook('onRequest', async (req, reply) => {
    const traceId = traceIdOf(req.headers.traceparent);
    if (traceId === undefined) return;
    req.log = req.log.child({ traceId });
    reply.log = req.log; // "request completed" too
  });
}
