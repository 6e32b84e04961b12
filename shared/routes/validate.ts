import { Ajv, type ErrorObject } from 'ajv';
import { isNormalHost, isValidHostPattern, normalizeHost } from '../hostname.js';
import { routeDeltaSchema, routeTableSchema, type RouteDelta, type RouteSpec, type RouteTableSpec } from './schema.js';

const ajv = new Ajv({ allErrors: false, strict: false });
const check = ajv.compile(routeTableSchema);
const checkDelta = ajv.compile(routeDeltaSchema);

export class RouteTableError extends Error {
  constructor(message: string, readonly field: string) {
    super(message);
    this.name = 'RouteTableError';
  }
}

function describe(err: ErrorObject): RouteTableError {
  const field = err.instancePath ? err.instancePath.slice(1).replace(/\//g, '.') : '(root)';
  let msg = err.message ?? 'is invalid';
  if (err.keyword === 'additionalProperties') {
    msg = `has unknown property "${(err.params as { additionalProperty: string }).additionalProperty}"`;
  } else if (err.keyword === 'enum') {
    msg = `must be one of ${(err.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  return new RouteTableError(`${field} ${msg}`, field);
}

/**
 * A usable upstream address: `host:port` (host of A-Z a-z 0-9 . _ -) or `[v6]:port` (and ':'),
 * port 1–65535. One pass over the characters, no allocation (a 10,000-route table checks 10,000
 * of these on the serving thread).
 */
export function isAddress(address: string): boolean {
  const n = address.length;
  const bracketed = address.charCodeAt(0) === 91; /* [ */
  let hostStart = 0;
  let hostEnd: number;
  let colon: number; // the ':' before the port
  if (bracketed) {
    hostStart = 1;
    hostEnd = address.indexOf(']');
    colon = hostEnd + 1;
    if (hostEnd === -1 || address.charCodeAt(colon) !== 58 /* : */) return false;
  } else {
    colon = hostEnd = address.lastIndexOf(':');
  }
  if (hostEnd <= hostStart) return false;
  for (let i = hostStart; i < hostEnd; i++) {
    const c = address.charCodeAt(i);
    // A-Z a-z 0-9 . _ - (and ':', only inside brackets)
    if (!((c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 46 || c === 95 || c === 45 || (c === 58 && bracketed))) return false;
  }
  const digits = n - colon - 1;
  if (digits < 1 || digits > 5) return false;
  let port = 0;
  for (let i = colon + 1; i < n; i++) {
    const c = address.charCodeAt(i);
    if (c < 48 || c > 57) return false;
    port = port * 10 + (c - 48);
  }
  return port >= 1 && port <= 65535;
}

/**
 * Validate a parsed route table whole. Throws RouteTableError naming the first bad field.
 * Returns the table with hostnames normalised. `keepOwners`: keep its host index for the deltas
 * that may come (hostOwners; the proxy's tables).
 */
export function validateRouteTable(input: unknown, keepOwners = false): RouteTableSpec {
  if (!check(input)) throw describe(check.errors![0]);
  return checkRoutes(input as unknown as RouteTableSpec, keepOwners);
}

/**
 * Each host of a checked table and the route serving it, or the routes splitting it (in no set
 * order: a split orders its routes by id): what a delta's routes are checked against and the
 * proxy's table is patched by.
 */
export type HostOwners = Map<string, RouteSpec | RouteSpec[]>;

/** Kept host indexes: a table's is handed on to the table its delta makes (shared/routes/delta.ts). */
const owners = new WeakMap<RouteTableSpec, HostOwners>();

/** The host index kept for `table` (validateRouteTable with keepOwners, or a delta made it). */
export function hostOwners(table: RouteTableSpec): HostOwners | undefined {
  return owners.get(table);
}

/** Keep `index` as `table`'s host index (null: forget the one it has). */
export function keepHostOwners(table: RouteTableSpec, index: HostOwners | null): void {
  if (index === null) owners.delete(table);
  else owners.set(table, index);
}

/**
 * What the schema cannot say about a table whose routes each passed it: ids unique, hosts valid
 * and served by one route (or split by weight), addresses usable, endpoint ids unique per route.
 * Normalises hostnames in place (a route object already in normal form is left as it is).
 */
export function checkRoutes(table: RouteTableSpec, keepOwners = false): RouteTableSpec {
  const routes = table.routes;
  // (a 10,000-route table is validated on the proxy's serving thread, so the common case costs
  // one Set insert per id and a Map lookup and write per host: no object per host, hosts already
  // in normal form kept as they are, array and strings alike)
  const ids = new Set<string>();
  const hosts: HostOwners = new Map();
  for (let ri = 0; ri < routes.length; ri++) {
    const route = routes[ri];
    const size = ids.size;
    if (ids.add(route.id).size === size) {
      throw new RouteTableError(`routes.${ri}.id "${route.id}" is used by another route`, `routes.${ri}.id`);
    }
    checkRoute(route, `routes.${ri}`);
    const hs = route.hosts;
    for (let hi = 0; hi < hs.length; hi++) addOwner(hosts, hs[hi], route, `routes.${ri}.hosts.${hi}`);
  }
  if (keepOwners) owners.set(table, hosts);
  return table;
}

/**
 * `route` serves host `n` too (`field` names it in errors): a host may be shared only by routes
 * that all say how to split it (a trafficWeight: revisions of one app), each listing it once (a
 * split would count a second listing twice).
 */
export function addOwner(index: HostOwners, n: string, route: RouteSpec, field: string): void {
  const o = index.get(n);
  if (o === undefined) {
    index.set(n, route);
    return;
  }
  const all = Array.isArray(o) ? o : [o];
  if (all.includes(route)) throw new RouteTableError(`${field} "${n}" is listed twice in this route`, field);
  // (all routes already there have a weight, or there is one)
  const other = all[0];
  if (route.trafficWeight === undefined || other.trafficWeight === undefined) throw taken(n, route, other, field);
  if (Array.isArray(o)) o.push(route);
  else index.set(n, [o, route]);
}

/** Host `n` of `route` is served by `other`, and they cannot share it. */
export function taken(n: string, route: RouteSpec, other: RouteSpec, field: string): RouteTableError {
  const why = route.trafficWeight !== undefined || other.trafficWeight !== undefined ? '; routes sharing a host must all have a trafficWeight' : '';
  return new RouteTableError(`${field} "${n}" is already served by route "${other.id}"${why}`, field);
}

/**
 * One route's own checks (`field` names it in errors): hosts valid (normalised in place; an
 * array already in normal form is kept), endpoint addresses usable, endpoint ids unique.
 */
export function checkRoute(route: RouteSpec, field: string): void {
  const hs = route.hosts;
  let normal: string[] | null = null;
  for (let hi = 0; hi < hs.length; hi++) {
    const h = hs[hi];
    const n = normalEntry(h);
    if (!isValidHostPattern(n)) throw new RouteTableError(`${field}.hosts.${hi} "${h}" is not a valid hostname or *.wildcard`, `${field}.hosts.${hi}`);
    if (n !== h) (normal ??= hs.slice())[hi] = n;
  }
  if (normal !== null) route.hosts = normal;
  // endpoint ids unique within the route: compared pairwise when there are few (no Set per route)
  const eps = route.endpoints;
  const epIds = eps.length > 8 ? new Set<string>() : null;
  for (let ei = 0; ei < eps.length; ei++) {
    const ep = eps[ei];
    if (!isAddress(ep.address)) {
      throw new RouteTableError(`${field}.endpoints.${ei}.address "${ep.address}" must be host:port with a port 1-65535`, `${field}.endpoints.${ei}.address`);
    }
    let dup = false;
    if (epIds !== null) {
      const size = epIds.size;
      dup = epIds.add(ep.id).size === size;
    } else for (let k = 0; k < ei && !dup; k++) dup = eps[k].id === ep.id;
    if (dup) throw new RouteTableError(`${field}.endpoints.${ei}.id "${ep.id}" is duplicated in this route`, `${field}.endpoints.${ei}.id`);
  }
}

/** A host entry in normal form: the host normalised, or `*.` and the normalised rest. */
function normalEntry(h: string): string {
  // already in normal form (the common case): the entry itself, no new string
  if (h.charCodeAt(0) === 42 /* * */ && h.charCodeAt(1) === 46 /* . */) {
    if (isNormalHost(h, 2)) return h;
  } else if (isNormalHost(h, 0)) return h;
  const t = h.trim();
  if (!t.startsWith('*.')) return normalizeHost(h);
  return '*.' + normalizeHost(t.slice(2));
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new RouteTableError(`${what} is not valid JSON: ${(e as Error).message}`, '(root)');
  }
}

/**
 * Parse JSON text and validate (the proxy's tables: their host index is kept for deltas). JSON
 * syntax errors become RouteTableError too.
 */
export function parseRouteTable(text: string): RouteTableSpec {
  return validateRouteTable(parseJson(text, 'route table'), true);
}

/**
 * Parse a RouteDelta and check its shape (its routes as a table's). What it adds is checked
 * against the table it makes when it is applied (shared/routes/delta.ts applyRouteDeltas).
 */
export function parseRouteDelta(text: string): RouteDelta {
  const parsed = parseJson(text, 'route delta');
  if (!checkDelta(parsed)) throw describe(checkDelta.errors![0]);
  const d = parsed as unknown as RouteDelta;
  // (versions only grow: a delta never goes back, and a version past 2^53 would not compare)
  if (!Number.isSafeInteger(d.version) || d.version <= d.base) throw new RouteTableError(`version ${d.version} must be an integer greater than base ${d.base} (and at most ${Number.MAX_SAFE_INTEGER})`, 'version');
  return d;
}
