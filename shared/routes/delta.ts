import { routeTableSchema, type RouteDelta, type RouteSpec, type RouteTableSpec } from './schema.js';
import { addOwner, checkRoute, checkRoutes, hostOwners, keepHostOwners, RouteTableError, taken, type HostOwners } from './validate.js';

/**
 * The table a delta makes of `base` (which it must name by version): `base`'s routes in their
 * order, each changed one in its place, the removed ones left out, new ones at the end; routes
 * the delta does not name are `base`'s own objects (the proxy recompiles only the routes that
 * changed: proxy/routing/table.ts), `base` is not modified. With it, the routes of `base`
 * leaving: removed, or replaced by a new version (by id). Checks that the delta fits its base (no
 * id named twice or both changed and removed, no removal of a route the base does not have), not
 * what it adds: applyRouteDeltas does.
 */
function merge(base: RouteTableSpec, delta: RouteDelta): { table: RouteTableSpec; removed: RouteSpec[]; replaced: Map<string, RouteSpec> } {
  if (delta.base !== base.version) {
    throw new RouteTableError(`the delta is from version ${delta.base}; the table here is version ${base.version}`, 'base');
  }
  // each id the delta names: its new version, or null (removed); one lookup per route of `base`
  const named = new Map<string, RouteSpec | null>();
  for (let i = 0; i < delta.upsert.length; i++) {
    const r = delta.upsert[i];
    const size = named.size;
    if (named.set(r.id, r).size === size) throw new RouteTableError(`upsert.${i}.id "${r.id}" is named twice in the delta`, `upsert.${i}.id`);
  }
  for (let i = 0; i < delta.remove.length; i++) {
    const id = delta.remove[i];
    const size = named.size;
    if (named.set(id, null).size === size) {
      throw new RouteTableError(delta.remove.indexOf(id) < i ? `remove.${i} "${id}" is named twice in the delta` : `remove.${i} "${id}" is also in upsert`, `remove.${i}`);
    }
  }
  const removed: RouteSpec[] = [];
  const replaced = new Map<string, RouteSpec>();
  const routes: RouteSpec[] = [];
  for (const r of base.routes) {
    const next = named.get(r.id);
    if (next === undefined) {
      routes.push(r);
      continue;
    }
    named.delete(r.id);
    if (next === null) removed.push(r);
    else {
      replaced.set(r.id, r);
      routes.push(next);
    }
  }
  // what is left: new routes, and removals of routes `base` does not have
  for (const [id, r] of named) {
    if (r !== null) {
      routes.push(r);
      continue;
    }
    const i = delta.remove.indexOf(id);
    throw new RouteTableError(`remove.${i} "${id}" is not a route of version ${base.version}`, `remove.${i}`);
  }
  return { table: { version: delta.version, routes }, removed, replaced };
}

/** The most routes a table may have: the schema's limit, which a whole table is held to. */
const MAX_ROUTES = routeTableSchema.properties.routes.maxItems;

/**
 * `base` with `deltas` applied in order: what a proxy serves after them. `base` must be a checked
 * table (parseRouteTable, or made by this); only what the deltas add is checked, as a whole table
 * would be (each new route's hosts and endpoints, its hosts against the routes that stay), against
 * the host index handed on from `base` (built here when it has none). Throws RouteTableError
 * naming what does not fit.
 */
export function applyRouteDeltas(base: RouteTableSpec, deltas: readonly RouteDelta[]): RouteTableSpec {
  // taken from `base`: changed in place below (`base` builds another if it ever needs one)
  let index = hostOwners(base);
  if (index === undefined) {
    // (a table checked without keeping its index: checked again, once, to build one)
    const copy = { version: base.version, routes: base.routes };
    index = hostOwners(checkRoutes(copy, true))!;
  }
  keepHostOwners(base, null);
  let t = base;
  for (const d of deltas) {
    let merged: ReturnType<typeof merge>;
    const up = d.upsert;
    try {
      merged = merge(t, d);
      if (merged.table.routes.length > MAX_ROUTES) throw new RouteTableError(`the table the delta makes has ${merged.table.routes.length} routes; at most ${MAX_ROUTES}`, 'upsert');
      for (let i = 0; i < up.length; i++) checkRoute(up[i], `upsert.${i}`);
    } catch (e) {
      // (refused before the index was touched: `t` keeps it, so a table a bad delta — or an
      // admin's bad PATCH — was refused against is not checked whole again for the next one)
      keepHostOwners(t, index);
      throw e;
    }
    const { table: next, removed, replaced } = merged;
    // Every host leaving first (the removed routes', and those a changed route no longer lists),
    // then the hosts a changed route keeps, then the new ones: so the answer does not depend on
    // the order of `upsert` (a host moving to a route listed before the one it leaves is fine).
    for (const r of removed) for (const h of r.hosts) dropOwner(index, h, r);
    for (const r of up) {
      const old = replaced.get(r.id);
      if (old !== undefined) for (const h of old.hosts) if (!r.hosts.includes(h)) dropOwner(index, h, old);
    }
    for (let i = 0; i < up.length; i++) {
      const old = replaced.get(up[i].id);
      if (old === undefined) continue;
      const hs = up[i].hosts;
      for (let hi = 0; hi < hs.length; hi++) if (old.hosts.includes(hs[hi])) swapOwner(index, hs[hi], old, up[i], `upsert.${i}.hosts.${hi}`);
    }
    for (let i = 0; i < up.length; i++) {
      const old = replaced.get(up[i].id);
      const hs = up[i].hosts;
      for (let hi = 0; hi < hs.length; hi++) if (old === undefined || !old.hosts.includes(hs[hi])) addOwner(index, hs[hi], up[i], `upsert.${i}.hosts.${hi}`);
    }
    t = next;
  }
  keepHostOwners(t, index);
  return t;
}

/** `r` no longer serves `h`. */
function dropOwner(index: HostOwners, h: string, r: RouteSpec): void {
  const o = index.get(h)!;
  if (!Array.isArray(o)) index.delete(h);
  else if (o.length === 2) index.set(h, o[0] === r ? o[1] : o[0]);
  else o.splice(o.indexOf(r), 1);
}

/** `r`, the new version of `old`, serves `h` in its place (checked as addOwner does). */
function swapOwner(index: HostOwners, h: string, old: RouteSpec, r: RouteSpec, field: string): void {
  const o = index.get(h)!;
  if (o === r || (Array.isArray(o) && o.includes(r))) throw new RouteTableError(`${field} "${h}" is listed twice in this route`, field);
  if (!Array.isArray(o)) {
    index.set(h, r);
    return;
  }
  const other = o[0] === old ? o[1] : o[0];
  if (r.trafficWeight === undefined) throw taken(h, r, other, field);
  o[o.indexOf(old)] = r;
}
