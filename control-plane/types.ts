/** Fastify decorations shared by every control-plane module. */
import type { preHandlerAsyncHookHandler } from 'fastify';
import type {} from '@fastify/cookie';
import type { Db } from './db/pool.js';
import type { ResolvedConfig } from './config.js';
import type { Metrics } from './http/metrics.js';
import type { EventRelay } from './events/outbox.js';
import type { Runtime } from './runtime/docker.js';

/** Who a request is, and how it authenticated: a session (JWT, cookie or Bearer) or an API token (its id). */
export type AuthUser = { id: number; email: string; username: string | null } & (
  | { via: 'session' }
  | { via: 'api_token'; tokenId: number }
);

declare module 'fastify' {
  interface FastifyInstance {
    db: Db;
    config: ResolvedConfig;
    metrics: Metrics;
    events: EventRelay;
    runtime: Runtime;
    /** preHandler: 401 unless the request carries a valid session JWT (Bearer or cookie) or API token. */
    authenticate: preHandlerAsyncHookHandler;
  }
  interface FastifyRequest {
    user?: AuthUser;
  }
}
