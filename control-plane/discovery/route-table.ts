import { DEFAULTS, type RouteSpec, type RouteTableSpec } from '../../shared/routes/schema.js';
import { validateRouteTable } from '../../shared/routes/validate.js';
import type { Queryable } from '../db/pool.js';
import { isValidHostPattern } from '../../shared/hostname.js';
import { provingAsideSql, routableSql, startFailedSql } from '../apps/repo.js';
import { resolveTraffic, tagHost, type RevisionState, type TrafficEntry } from '../apps/traffic.js';

/** Address proxies use for a container published on `host_port`. */
export const endpointAddress = (endpointHost: string, hostPort: number) =>
  `${endpointHost.includes(':') ? `[${endpointHost}]` : endpointHost}:${hostPort}`;

interface RouteRow {
  app_hostname: string;
  /** the app is private (apps/access.ts): read with its routes, so one never goes out without `auth` */
  private: boolean;
  traffic: TrafficEntry[];
  pending_image_id: number | null;
  image_id: number;
  revision: number;
  status: RevisionState['status'];
  routable: boolean;
  failed: boolean;
  /** being proven outside the split (servingRevisions reads it; the route table does not need it) */
  aside?: boolean;
  container_concurrency: number;
  request_timeout_s: number;
  session_affinity: boolean;
  upstream_pipeline: number;
  min_instances: number;
  min_instances_provisioned: boolean;
  /** an instance is on its way: wanted running, and being created or not yet probed healthy */
  starting: boolean;
  container_id: number | null;
  host_port: number | null;
}

/**
 * The routes of every app: one route per revision that has a share of the app's traffic or a tag
 * (`img-{id}`), whose endpoints are its containers that are running, wanted running, and healthy.
 * A revision with a share lists the app's hostname; when several do, each carries its share as
 * `trafficWeight` and the proxies split the hostname between them. A tag adds
 * `{tag}---{app_hostname}`. A revision with no healthy container keeps its route with no
 * endpoints, so the proxy answers 503 (known app, no capacity) rather than 404, or holds the
 * request and wakes it (`wake`).
 */
export async function buildRoutes(q: Queryable, endpointHost: string, hold?: Hold): Promise<RouteSpec[]> {
  return [...(await readAppRoutes(q, endpointHost, hold)).values()].flat();
}

/** How long and how many requests proxies hold for a route (when it waits for an instance or a slot). */
export interface Hold { maxQueue: number; timeoutMs: number }

/**
 * buildRoutes by app: each app read (not being deleted) and its routes, in the order of
 * buildRoutes (an app without any: an empty list). With `only`, just the apps `hosts` names (those
 * that exist), their tag hosts claimed as if every app of `appHosts` had been read too (a tag host
 * never takes another app's hostname); an app's routes depend on nothing else of other apps (tag
 * hosts of two apps never collide: a tag has no `---`).
 */
export async function readAppRoutes(q: Queryable, endpointHost: string, hold: Hold = { maxQueue: DEFAULTS.concurrency.maxQueue, timeoutMs: DEFAULTS.concurrency.queueTimeoutMs }, only?: { hosts: readonly string[]; appHosts: ReadonlySet<string> }): Promise<Map<string, RouteSpec[]>> {
  // how long and how many requests proxies hold (only written when not the proxies' defaults)
  const holdSpec = {
    ...(hold.maxQueue !== DEFAULTS.concurrency.maxQueue ? { maxQueue: hold.maxQueue } : {}),
    ...(hold.timeoutMs !== DEFAULTS.concurrency.queueTimeoutMs ? { queueTimeoutMs: hold.timeoutMs } : {}),
  };
  // (every column read here is in the UPDATE OF lists of migration 029's triggers: a change to
  // one must tell the control planes which app it touched)
  const { rows } = await q.query<RouteRow>(
    `SELECT a.app_hostname, a.private, a.traffic, a.pending_image_id, i.id AS image_id, i.revision, i.status,
            ${routableSql('i')} AS routable, ${startFailedSql('i')} AS failed,
            i.container_concurrency, i.request_timeout_s, i.session_affinity, i.upstream_pipeline, i.min_instances, i.min_instances_provisioned,
            EXISTS (SELECT 1 FROM containers w WHERE w.image_id = i.id AND w.desired = 'running'
                      AND (w.status = 'creating' OR (w.status = 'running' AND w.health = 'unknown'))) AS starting,
            c.id AS container_id, c.host_port
       FROM apps a
       JOIN images i ON i.app_hostname = a.app_hostname
       LEFT JOIN containers c ON c.image_id = i.id AND c.status = 'running' AND c.desired = 'running'
                              AND c.health = 'healthy' AND c.host_port IS NOT NULL
      WHERE a.deleting_at IS NULL${only ? ' AND a.app_hostname = ANY ($1::text[])' : ''}
      ORDER BY a.app_hostname, i.id, c.id`, only ? [only.hosts] : []);
  // private apps: the digests of their invoker tokens (none: nobody may call it). Read after the
  // rows: an app that turned public meanwhile fails closed for one table, never open.
  const { rows: invokers } = await q.query<{ app_hostname: string; token_sha256: string }>(
    `SELECT v.app_hostname, v.token_sha256 FROM app_invokers v JOIN apps a ON a.app_hostname = v.app_hostname
      WHERE a.private${only ? ' AND a.app_hostname = ANY ($1::text[])' : ''} ORDER BY v.id`, only ? [only.hosts] : []);
  const tokensOf = new Map<string, string[]>();
  for (const v of invokers) tokensOf.set(v.app_hostname, [...(tokensOf.get(v.app_hostname) ?? []), v.token_sha256]);
  const isPrivate = new Set(rows.filter((r) => r.private).map((r) => r.app_hostname));
  const byApp = new Map<string, RouteSpec[]>();
  const apps = groupApps(rows);
  // A host claimed twice, or one no proxy accepts, would make the whole table invalid (every proxy
  // would refuse it, for every tenant): each is dropped on its own here. App hostnames are claimed
  // before any tag host, so a tag can never take an app's own hostname (the upload refuses `---`
  // in new hostnames; older ones may have it).
  const claimed = new Map<string, string>();
  if (only) for (const h of only.appHosts) claimed.set(h, h);
  for (const app of apps) if (!claimed.has(app.host)) claimed.set(app.host, app.host);
  const claim = (host: string, app: string) => {
    if (!isValidHostPattern(host)) return false;
    const owner = claimed.get(host);
    if (owner === undefined) { claimed.set(host, app); return true; }
    return owner === app;
  };
  for (const app of apps) {
    const routes: RouteSpec[] = [];
    byApp.set(app.host, routes);
    const resolved = resolveTraffic(app.traffic, app.revisions, app.pending);
    const weighted = resolved.percent.size > 1;
    for (const rev of app.revisions) {
      const percent = resolved.percent.get(rev.id) ?? 0;
      const tags = resolved.tags.get(rev.id) ?? [];
      if (percent === 0 && tags.length === 0) continue;
      const r = rev.first;
      const route: RouteSpec = { id: `img-${rev.id}`, hosts: [], endpoints: [], policy: 'round_robin' };
      if (percent > 0 && claim(app.host, app.host)) route.hosts.push(app.host);
      for (const t of tags) if (claim(tagHost(t, app.host), app.host)) route.hosts.push(tagHost(t, app.host));
      if (route.hosts.length === 0) continue;
      if (percent > 0 && weighted) route.trafficWeight = percent;
      // the app's container_concurrency, enforced by every proxy (0 = no limit)
      if (r.container_concurrency > 0) route.concurrency = { perEndpoint: r.container_concurrency };
      // the revision's request timeout (Cloud Run's --timeout): the wait for the response head, and
      // the longest gap between its body bytes, before the proxy answers 504 / ends the response
      route.timeouts = { headersMs: r.request_timeout_s * 1000, idleMs: r.request_timeout_s * 1000 };
      // Cloud Run's --session-affinity: a cookie keeps each client on its instance (and revision)
      if (r.session_affinity) route.affinity = true;
      // HTTP/1.1 pipelining to its instances (opt-in per revision)
      if (r.upstream_pipeline > 1) route.pipeline = r.upstream_pipeline;
      // a private app (apps/access.ts): every one of its routes, tag hosts too, needs a token
      if (isPrivate.has(app.host)) route.auth = { tokens: tokensOf.get(app.host) ?? [] };
      // Proxies hold its requests and ask for an instance (POST /v1/routes/:id/activate) when it
      // scales to zero, when berth owes it its min_instances (it just got traffic back), or while
      // an instance is on its way (a new app, or a replaced instance, is not a 503 for the
      // moments it takes to boot; one that is up but unhealthy is).
      if (r.min_instances === 0 || !r.min_instances_provisioned || (r.starting && !rev.rows.some((c) => c.container_id !== null))) route.wake = true;
      if ((route.concurrency || route.wake) && Object.keys(holdSpec).length) route.concurrency = { ...route.concurrency, ...holdSpec };
      for (const c of rev.rows) {
        if (c.container_id !== null && c.host_port !== null) {
          route.endpoints.push({ id: `c-${c.container_id}`, address: endpointAddress(endpointHost, c.host_port), weight: 1 });
        }
      }
      routes.push(route);
    }
  }
  return byApp;
}

/** Image ids that should have instances now (see ResolvedTraffic.serving), over every app; an app being deleted has none. */
export async function servingRevisions(q: Queryable, host?: string): Promise<Set<number>> {
  // one app's (a wake asks about one revision), or every app's
  const { rows } = await q.query<RouteRow>(
    `SELECT a.app_hostname, a.traffic, a.pending_image_id, i.id AS image_id, i.revision, i.status,
            ${routableSql('i')} AS routable, ${startFailedSql('i')} AS failed, ${provingAsideSql('i')} AS aside
       FROM apps a JOIN images i ON i.app_hostname = a.app_hostname
      WHERE a.deleting_at IS NULL${host === undefined ? '' : ' AND a.app_hostname = $1'}
      ORDER BY a.app_hostname, i.id`, host === undefined ? [] : [host]);
  const out = new Set<number>();
  for (const app of groupApps(rows)) for (const id of resolveTraffic(app.traffic, app.revisions, app.pending).serving) out.add(id);
  return out;
}

interface AppRevisions {
  host: string;
  traffic: TrafficEntry[];
  pending: number | null;
  revisions: (RevisionState & { first: RouteRow; rows: RouteRow[] })[];
}

/** Rows ordered by app then image → apps with their revisions (and each revision's rows). */
function groupApps(rows: RouteRow[]): AppRevisions[] {
  const apps: AppRevisions[] = [];
  let app: AppRevisions | undefined;
  for (const r of rows) {
    if (app?.host !== r.app_hostname) {
      app = { host: r.app_hostname, traffic: Array.isArray(r.traffic) ? r.traffic : [], pending: r.pending_image_id ?? null, revisions: [] };
      apps.push(app);
    }
    let rev = app.revisions[app.revisions.length - 1];
    if (rev?.id !== r.image_id) {
      rev = { id: r.image_id, revision: r.revision, status: r.status, routable: r.routable, failed: r.failed, aside: r.aside === true, first: r, rows: [] };
      app.revisions.push(rev);
    }
    rev.rows.push(r);
  }
  return apps;
}

/**
 * A complete table, validated exactly as the proxy will validate it (its host index kept: the
 * hub makes the next tables from it by deltas).
 */
export function makeTable(version: number, routes: RouteSpec[]): RouteTableSpec {
  return validateRouteTable(JSON.parse(JSON.stringify({ version, routes })), true);
}

/**
 * A table as a proxy without one feature can read it, computed once per table (every watcher of
 * that kind gets the same object): `uses` says whether the table has the feature at all.
 */
function downgrade(uses: (r: RouteSpec) => boolean, transform: (t: RouteTableSpec) => RouteTableSpec): (t: RouteTableSpec) => RouteTableSpec {
  const cache = new WeakMap<RouteTableSpec, RouteTableSpec>();
  return (t) => {
    if (!t.routes.some(uses)) return t;
    let out = cache.get(t);
    if (out === undefined) cache.set(t, (out = transform(t)));
    return out;
  };
}

/**
 * The table for a proxy that predates private apps: without their routes at all (it would serve
 * them to anyone), so those apps answer 404 there until it is upgraded. Fails closed.
 */
export const withoutAuth = downgrade((r) => r.auth !== undefined, (t) => ({ ...t, routes: t.routes.filter((r) => r.auth === undefined) }));

/**
 * The table for a proxy that predates session affinity (its schema refuses `affinity`): the same
 * routes without it, so the proxy keeps serving them, balanced as usual.
 */
export const withoutAffinity = withoutField('affinity');

/**
 * The table for a proxy that predates pipelining (its schema refuses `pipeline`): the same routes
 * without it, so the proxy keeps serving them one request per connection at a time.
 */
export const withoutPipeline = withoutField('pipeline');

/**
 * The same routes without an optional field an older proxy's schema would refuse. A route without
 * it is the same object, one with it the same copy from table to table (route-events.ts
 * serialises each route object once).
 */
function withoutField(key: 'affinity' | 'pipeline'): (t: RouteTableSpec) => RouteTableSpec {
  const copies = new WeakMap<RouteSpec, RouteSpec>();
  return downgrade((r) => r[key] !== undefined, (t) => ({
    ...t,
    routes: t.routes.map((r) => {
      if (r[key] === undefined) return r;
      let rest = copies.get(r);
      if (rest === undefined) {
        rest = { ...r };
        delete rest[key];
        copies.set(r, rest);
      }
      return rest;
    }),
  }));
}

/**
 * The table for a proxy that predates traffic splitting (it refuses `trafficWeight` and hosts
 * listed twice): each shared host stays on its largest share only, so a rolling upgrade keeps
 * every old proxy serving current tables (without the split) instead of freezing on a stale one.
 */
export const withoutSplits = downgrade((r) => r.trafficWeight !== undefined, (t) => {
  const best = new Map<string, RouteSpec>();
  for (const r of t.routes) {
    if (r.trafficWeight === undefined) continue;
    for (const h of r.hosts) {
      const b = best.get(h);
      // (a tie goes to the lower id: the same whatever order the table's routes are in)
      if (b === undefined || r.trafficWeight > (b.trafficWeight ?? 0) || (r.trafficWeight === b.trafficWeight && r.id < b.id)) best.set(h, r);
    }
  }
  const routes: RouteSpec[] = [];
  for (const r of t.routes) {
    // (a route that splits nothing is the same object)
    if (r.trafficWeight === undefined) {
      routes.push(r);
      continue;
    }
    const { trafficWeight, ...rest } = r;
    const hosts = r.hosts.filter((h) => best.get(h) === r);
    if (hosts.length > 0) routes.push({ ...rest, hosts });
  }
  return { ...t, routes };
});
