import { Ajv, type ErrorObject } from 'ajv';
import { isValidHostPattern, normalizeHost } from '../hostname.js';
import { routeTableSchema, type RouteTableSpec } from './schema.js';

const ajv = new Ajv({ allErrors: false, strict: false });
const check = ajv.compile(routeTableSchema);

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

/** Parse "host:port" / "[v6]:port". Returns null when it is not a usable upstream address. */
export function parseAddress(address: string): { host: string; port: number } | null {
  let host: string;
  let portStr: string;
  if (address.startsWith('[')) {
    const close = address.indexOf(']');
    if (close === -1 || address[close + 1] !== ':') return null;
    host = address.slice(1, close);
    portStr = address.slice(close + 2);
  } else {
    const colon = address.lastIndexOf(':');
    if (colon <= 0) return null;
    host = address.slice(0, colon);
    portStr = address.slice(colon + 1);
    if (host.includes(':')) return null;
  }
  if (!/^\d{1,5}$/.test(portStr)) return null;
  const port = Number(portStr);
  if (port < 1 || port > 65535) return null;
  if (!/^[A-Za-z0-9._:-]+$/.test(host)) return null;
  return { host, port };
}

/**
 * Validate a parsed route table whole. Throws RouteTableError naming the first bad field.
 * Returns the table with hostnames normalised.
 */
export function validateRouteTable(input: unknown): RouteTableSpec {
  if (!check(input)) throw describe(check.errors![0]);
  const table = input as unknown as RouteTableSpec;
  // host → index of the route that has it (no object per host: 20,000 of them in a 10k-route table)
  const seenHosts = new Map<string, number>();
  const seenIds = new Set<string>();
  table.routes.forEach((route, ri) => {
    if (seenIds.has(route.id)) throw new RouteTableError(`routes.${ri}.id "${route.id}" is used by another route`, `routes.${ri}.id`);
    seenIds.add(route.id);
    // (a 10,000-route table is validated on the proxy's serving thread: hosts already in normal
    // form, the common case, are kept as they are, array and strings alike)
    const hosts = route.hosts;
    let normal: string[] | null = null;
    for (let hi = 0; hi < hosts.length; hi++) {
      const h = hosts[hi];
      const n = normalEntry(h);
      if (!isValidHostPattern(n)) {
        throw new RouteTableError(`routes.${ri}.hosts.${hi} "${h}" is not a valid hostname or *.wildcard`, `routes.${ri}.hosts.${hi}`);
      }
      const at = seenHosts.get(n);
      if (at !== undefined) {
        const other = table.routes[at];
        const weighted = other.trafficWeight !== undefined;
        // a host may be shared only by routes that all say how to split it (revisions of one app)
        if (!(weighted && route.trafficWeight !== undefined && at !== ri)) {
          const why = weighted || route.trafficWeight !== undefined ? '; routes sharing a host must all have a trafficWeight' : '';
          throw new RouteTableError(`routes.${ri}.hosts.${hi} "${n}" is already served by route "${other.id}"${why}`, `routes.${ri}.hosts.${hi}`);
        }
      } else seenHosts.set(n, ri);
      if (n !== h) (normal ??= hosts.slice())[hi] = n;
    }
    if (normal !== null) route.hosts = normal;
    // endpoint ids unique within the route: compared pairwise when there are few (no Set per route)
    const eps = route.endpoints;
    const epIds = eps.length > 8 ? new Set<string>() : null;
    for (let ei = 0; ei < eps.length; ei++) {
      const ep = eps[ei];
      if (!parseAddress(ep.address)) {
        throw new RouteTableError(`routes.${ri}.endpoints.${ei}.address "${ep.address}" must be host:port with a port 1-65535`, `routes.${ri}.endpoints.${ei}.address`);
      }
      let dup = false;
      if (epIds !== null) {
        dup = epIds.has(ep.id);
        epIds.add(ep.id);
      } else for (let k = 0; k < ei && !dup; k++) dup = eps[k].id === ep.id;
      if (dup) throw new RouteTableError(`routes.${ri}.endpoints.${ei}.id "${ep.id}" is duplicated in this route`, `routes.${ri}.endpoints.${ei}.id`);
    }
  });
  return table;
}

/** A host entry in normal form: the host normalised, or `*.` and the normalised rest. */
function normalEntry(h: string): string {
  const t = h.trim();
  if (!t.startsWith('*.')) return normalizeHost(h);
  const rest = t.slice(2);
  const n = normalizeHost(rest);
  // (already in normal form: the entry itself, no new string)
  return n === rest && t.length === h.length ? h : '*.' + n;
}

/** Parse JSON text and validate. JSON syntax errors become RouteTableError too. */
export function parseRouteTable(text: string): RouteTableSpec {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new RouteTableError(`route table is not valid JSON: ${(e as Error).message}`, '(root)');
  }
  return validateRouteTable(parsed);
}
