import type { RouteSpec, RouteTableSpec } from '../../shared/routes/schema.js';
import { validateRouteTable } from '../../shared/routes/validate.js';
import type { Queryable } from '../db/pool.js';

/** Address proxies use for a container published on `host_port`. */
export const endpointAddress = (endpointHost: string, hostPort: number) =>
  `${endpointHost.includes(':') ? `[${endpointHost}]` : endpointHost}:${hostPort}`;

/**
 * The routes of every ready image: one route per image (`img-{id}`, its app_hostname), whose
 * endpoints are the containers that are running, wanted running, and healthy. An image with no
 * healthy container keeps its route with no endpoints, so the proxy answers 503 (known app, no
 * capacity) rather than 404.
 */
export async function buildRoutes(q: Queryable, endpointHost: string): Promise<RouteSpec[]> {
  const { rows } = await q.query<{ image_id: number; app_hostname: string; container_concurrency: number; min_instances: number; container_id: number | null; host_port: number | null }>(
    `SELECT i.id AS image_id, i.app_hostname, i.container_concurrency, i.min_instances, c.id AS container_id, c.host_port
       FROM images i
       LEFT JOIN containers c ON c.image_id = i.id AND c.status = 'running' AND c.desired = 'running'
                              AND c.health = 'healthy' AND c.host_port IS NOT NULL
      WHERE i.status = 'ready'
      ORDER BY i.id, c.id`);
  const routes: RouteSpec[] = [];
  let cur: RouteSpec | undefined;
  let curImage = -1;
  for (const r of rows) {
    if (r.image_id !== curImage) {
      curImage = r.image_id;
      cur = { id: `img-${r.image_id}`, hosts: [r.app_hostname], endpoints: [], policy: 'round_robin' };
      // the app's container_concurrency, enforced by every proxy (0 = no limit)
      if (r.container_concurrency > 0) cur.concurrency = { perEndpoint: r.container_concurrency };
      // scales to zero: proxies hold its requests and ask for an instance (POST /v1/routes/:id/activate)
      if (r.min_instances === 0) cur.wake = true;
      routes.push(cur);
    }
    if (r.container_id !== null && r.host_port !== null) {
      cur!.endpoints.push({ id: `c-${r.container_id}`, address: endpointAddress(endpointHost, r.host_port), weight: 1 });
    }
  }
  return routes;
}

/** A complete table, validated exactly as the proxy will validate it. */
export function makeTable(version: number, routes: RouteSpec[]): RouteTableSpec {
  return validateRouteTable(JSON.parse(JSON.stringify({ version, routes })));
}
