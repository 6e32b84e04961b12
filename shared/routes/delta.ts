import type { RouteDelta, RouteSpec, RouteTableSpec } from './schema.js';
import { checkRoutes, RouteTableError } from './validate.js';

/**
 * The table a delta makes of `base` (which it must name by version): `base`'s routes in their
 * order, each changed one in its place, the removed ones left out, new ones at the end. Routes
 * the delta does not name are `base`'s own objects (the proxy recompiles only the routes that
 * changed: proxy/routing/table.ts). `base` is not modified. Checks that the delta fits its base
 * (no id both changed and removed, no removal of a route the base does not have), not the table
 * it makes: applyRouteDelta does both.
 */
export function mergeRouteDelta(base: RouteTableSpec, delta: RouteDelta): RouteTableSpec {
  if (delta.base !== base.version) {
    throw new RouteTableError(`the delta is from version ${delta.base}; the table here is version ${base.version}`, 'base');
  }
  const upsert = new Map<string, RouteSpec>();
  for (let i = 0; i < delta.upsert.length; i++) {
    const r = delta.upsert[i];
    const size = upsert.size;
    if (upsert.set(r.id, r).size === size) throw new RouteTableError(`upsert.${i}.id "${r.id}" is named twice in the delta`, `upsert.${i}.id`);
  }
  const remove = new Set<string>();
  for (let i = 0; i < delta.remove.length; i++) {
    const id = delta.remove[i];
    if (upsert.has(id)) throw new RouteTableError(`remove.${i} "${id}" is also in upsert`, `remove.${i}`);
    remove.add(id);
  }
  let removed = 0;
  const routes: RouteSpec[] = [];
  for (const r of base.routes) {
    if (remove.has(r.id)) {
      removed++;
      continue;
    }
    const changed = upsert.get(r.id);
    if (changed === undefined) routes.push(r);
    else {
      routes.push(changed);
      upsert.delete(r.id);
    }
  }
  if (removed !== remove.size) {
    const have = new Set(base.routes.map((r) => r.id));
    const i = delta.remove.findIndex((id) => !have.has(id));
    throw new RouteTableError(`remove.${i} "${delta.remove[i]}" is not a route of version ${base.version}`, `remove.${i}`);
  }
  for (const r of upsert.values()) routes.push(r);
  return { version: delta.version, routes };
}

/**
 * `base` with `deltas` applied in order, the table they make checked whole (checkRoutes): what a
 * proxy serves after them. `base` must be a checked table (parseRouteTable, or this): its routes
 * are not read again, only counted against the new ones. Throws RouteTableError naming what does
 * not fit.
 */
export function applyRouteDeltas(base: RouteTableSpec, deltas: readonly RouteDelta[]): RouteTableSpec {
  let t = base;
  const fresh = new Set<RouteSpec>();
  for (const d of deltas) {
    t = mergeRouteDelta(t, d);
    for (const r of d.upsert) fresh.add(r);
  }
  return checkRoutes(t, fresh);
}
