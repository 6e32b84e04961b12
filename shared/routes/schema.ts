/**
 * The route table: the contract between control plane and proxy (see README "Route table").
 * JSON Schema used by the proxy on every ingress (file, PUT /routes, control-plane push)
 * and by the control plane before it publishes a table.
 */
export type BalancingPolicy = 'round_robin' | 'least_request' | 'weighted';

export interface EndpointSpec {
  id: string;
  address: string; // host:port
  weight?: number;
}

export interface RouteSpec {
  id: string;
  hosts: string[];
  endpoints: EndpointSpec[];
  policy?: BalancingPolicy;
  circuitBreaker?: { consecutiveFailures?: number; openMs?: number; failOn5xx?: boolean };
  fallbackCache?: { ttlMs?: number; maxEntries?: number; maxBytes?: number; enabled?: boolean };
  timeouts?: { connectMs?: number; headersMs?: number; idleMs?: number };
  retry?: { attempts?: number };
  /**
   * At most `perEndpoint` requests at once on each endpoint (an app's container_concurrency;
   * 0 = no limit). Requests beyond it wait in a per-route FIFO, at most `maxQueue` of them and for
   * at most `queueTimeoutMs` (503 `overloaded` / 504 `queue_timeout` past those).
   */
  concurrency?: { perEndpoint?: number; maxQueue?: number; queueTimeoutMs?: number };
  /**
   * The app scales to zero: when no endpoint can take a request the proxy holds it (the same
   * bounded queue) and asks the control plane for an instance (`POST /v1/routes/:id/activate`),
   * releasing held requests in order as endpoints appear.
   */
  wake?: boolean;
  /**
   * Traffic splitting between revisions: when several routes list the same host, each of them
   * carries a `trafficWeight` and the proxy sends each request for that host to one of them by
   * smooth weighted round robin (90/10 is exact over every 10 requests). A host listed by one
   * route only (a tag host like `canary---shop.example.com`) ignores it. Tables without shared
   * hosts never carry it, so they stay readable by proxies that predate it.
   */
  trafficWeight?: number;
  /**
   * Session affinity (Cloud Run's `--session-affinity`): the proxy answers with a cookie
   * (`berth-affinity`) naming the endpoint that served, and later requests carrying it go to that
   * endpoint — and, on a split host, to its route (revision) — while it takes traffic (breaker
   * closed, below its concurrency cap); otherwise they are balanced as usual and the cookie is
   * renewed. Best effort, as Cloud Run's: instances come and go. Sent only to proxies that ask for
   * it (`?features=affinity`).
   */
  affinity?: boolean;
  /**
   * A private app (Cloud Run's `--no-allow-unauthenticated`): only requests carrying one of these
   * tokens (`X-Berth-Authorization: Bearer T`, or `Authorization: Bearer T`), given as the
   * lower-case hex SHA-256 of each, reach it; others get 401. The header used is not forwarded.
   * Sent only to proxies that ask for it (`?features=auth`); others do not get the route at all.
   */
  auth?: { tokens: string[] };
  /**
   * HTTP/1.1 pipelining to the endpoints (auto-pipelining, as Redis clients do it): up to this
   * many bodiless GET requests that reach the proxy in the same event-loop turn for the same
   * endpoint share one upstream connection and go out in one write; the answers come back in
   * order. 1 (the default) never pipelines. Requests behind an answer that would hold them up (a
   * stream, a large or slow answer, a closing connection) are sent again, alone. For app servers
   * that handle pipelining and frame their answers correctly (proxy/README.md "Pipelining").
   */
  pipeline?: number;
}

export interface RouteTableSpec {
  version: number;
  routes: RouteSpec[];
}

/**
 * A change to a table (`GET /v1/routes/watch?features=…,delta`, `event: delta`): from the table
 * of version `base` to the one of `version`, the routes added or changed (whole, by id) and the
 * ids removed. Applies only to exactly its base; anything else means the reader lost track and
 * reads the whole table again.
 */
export interface RouteDelta {
  base: number;
  version: number;
  upsert: RouteSpec[];
  remove: string[];
}

export const DEFAULTS = {
  policy: 'round_robin' as BalancingPolicy,
  circuitBreaker: { consecutiveFailures: 3, openMs: 15_000, failOn5xx: false },
  fallbackCache: { ttlMs: 10_000, maxEntries: 1000, maxBytes: 16 * 1024 * 1024, enabled: true },
  timeouts: { connectMs: 2_000, headersMs: 30_000, idleMs: 60_000 },
  retry: { attempts: 1 },
  concurrency: { perEndpoint: 0, maxQueue: 1000, queueTimeoutMs: 30_000 },
};

export const routeTableSchema = {
  $id: 'berth/route-table',
  type: 'object',
  additionalProperties: false,
  required: ['version', 'routes'],
  properties: {
    version: { type: 'integer', minimum: 0 },
    generatedAt: { type: 'string' },
    routes: {
      type: 'array',
      maxItems: 200_000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'hosts', 'endpoints'],
        properties: {
          id: { type: 'string', minLength: 1, maxLength: 200 },
          hosts: { type: 'array', minItems: 1, maxItems: 100, items: { type: 'string', minLength: 1, maxLength: 300 } },
          endpoints: {
            type: 'array',
            maxItems: 1000,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['id', 'address'],
              properties: {
                id: { type: 'string', minLength: 1, maxLength: 200 },
                address: { type: 'string', minLength: 3, maxLength: 300 },
                weight: { type: 'integer', minimum: 0, maximum: 1000 },
              },
            },
          },
          policy: { enum: ['round_robin', 'least_request', 'weighted'] },
          circuitBreaker: {
            type: 'object',
            additionalProperties: false,
            properties: {
              consecutiveFailures: { type: 'integer', minimum: 1, maximum: 1000 },
              openMs: { type: 'integer', minimum: 1, maximum: 3_600_000 },
              failOn5xx: { type: 'boolean' },
            },
          },
          fallbackCache: {
            type: 'object',
            additionalProperties: false,
            properties: {
              enabled: { type: 'boolean' },
              ttlMs: { type: 'integer', minimum: 0, maximum: 86_400_000 },
              maxEntries: { type: 'integer', minimum: 1, maximum: 1_000_000 },
              maxBytes: { type: 'integer', minimum: 1, maximum: 1_073_741_824 },
            },
          },
          timeouts: {
            type: 'object',
            additionalProperties: false,
            properties: {
              connectMs: { type: 'integer', minimum: 1, maximum: 600_000 },
              headersMs: { type: 'integer', minimum: 1, maximum: 3_600_000 },
              idleMs: { type: 'integer', minimum: 1, maximum: 3_600_000 },
            },
          },
          retry: {
            type: 'object',
            additionalProperties: false,
            properties: { attempts: { type: 'integer', minimum: 0, maximum: 5 } },
          },
          wake: { type: 'boolean' },
          affinity: { type: 'boolean' },
          auth: {
            type: 'object',
            additionalProperties: false,
            required: ['tokens'],
            properties: { tokens: { type: 'array', maxItems: 10_000, items: { type: 'string', pattern: '^[0-9a-f]{64}$' } } },
          },
          trafficWeight: { type: 'integer', minimum: 1, maximum: 1_000_000 },
          pipeline: { type: 'integer', minimum: 1, maximum: 16 },
          concurrency: {
            type: 'object',
            additionalProperties: false,
            properties: {
              perEndpoint: { type: 'integer', minimum: 0, maximum: 100_000 },
              maxQueue: { type: 'integer', minimum: 0, maximum: 1_000_000 },
              queueTimeoutMs: { type: 'integer', minimum: 1, maximum: 3_600_000 },
            },
          },
        },
      },
    },
  },
} as const;

/** A RouteDelta's shape: its routes as a table's (what they add is checked against the table they make: shared/routes/delta.ts). */
export const routeDeltaSchema = {
  $id: 'berth/route-delta',
  type: 'object',
  additionalProperties: false,
  required: ['base', 'version', 'upsert', 'remove'],
  properties: {
    base: { type: 'integer', minimum: 0 },
    version: { type: 'integer', minimum: 0 },
    upsert: routeTableSchema.properties.routes,
    remove: { type: 'array', maxItems: routeTableSchema.properties.routes.maxItems, items: routeTableSchema.properties.routes.items.properties.id },
  },
} as const;
