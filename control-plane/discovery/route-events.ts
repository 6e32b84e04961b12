import type { RouteSpec, RouteTableSpec } from '../../shared/routes/schema.js';

/** A table as one set of proxies reads it: each route's JSON, by id, in the table's order. */
type RouteTexts = Map<string, string>;

/**
 * The route watch's events (`GET /v1/routes/watch`), made once per table and set of features and
 * shared by every stream that reads them: 10,000 routes are 1.4 MB of JSON.
 *
 * - `event: routes`: the whole table (a stream's first event, and whenever a delta would not be
 *   much smaller).
 * - `event: delta` (proxies that read `delta`): shared/routes/schema.ts RouteDelta from the table
 *   the stream was sent last: each route added or changed (whole) and each id removed. A scale
 *   event or a deploy changes a route or two, so a 10,000-route proxy reads, checks and compiles
 *   those, not the whole table again.
 */
export class RouteEvents {
  private readonly texts = new WeakMap<RouteTableSpec, Map<number, RouteTexts>>();
  private readonly tables = new WeakMap<RouteTableSpec, Map<number, string>>();
  /**
   * each table's delta from the table most streams were sent before it (they move together),
   * that one named by version (versions are unique: a Postgres sequence), not held: each table
   * would hold the one before it, and so on back to the first
   */
  private readonly deltas = new WeakMap<RouteTableSpec, Map<number, { from: number; text: string | null }>>();
  /**
   * each route's JSON, by the route object: a table the hub made from the last by a delta keeps
   * the last one's objects for the routes that did not change (and so do the downgrades), so a
   * change serialises the routes it changed, not the 10,000 others again. Tables are never
   * modified once published.
   */
  private readonly text = new WeakMap<RouteSpec, string>();

  /** `readable`: the table as proxies reading the features in `mask` read it (route-table.ts's downgrades) */
  constructor(private readonly readable: (t: RouteTableSpec, mask: number) => RouteTableSpec) {}

  /** `event: routes` with the whole table. */
  table(t: RouteTableSpec, mask: number): string {
    let byMask = this.tables.get(t);
    if (byMask === undefined) this.tables.set(t, (byMask = new Map()));
    let text = byMask.get(mask);
    if (text === undefined) {
      // (the JSON of { version, routes }, from the routes' own: each route serialised once per table)
      text = `event: routes\ndata: {"version":${t.version},"routes":[${[...this.routeTexts(t, mask).values()].join(',')}]}\n\n`;
      byMask.set(mask, text);
    }
    return text;
  }

  /**
   * `event: delta` from `from` (the table the stream was sent last) to `to`, or null when the
   * whole table is the better event: more than half of the routes changed, or `to` is not newer.
   */
  delta(from: RouteTableSpec, to: RouteTableSpec, mask: number): string | null {
    if (to.version <= from.version) return null;
    let byMask = this.deltas.get(to);
    if (byMask === undefined) this.deltas.set(to, (byMask = new Map()));
    const made = byMask.get(mask);
    if (made !== undefined && made.from === from.version) return made.text;
    const text = this.diff(from, to, mask);
    byMask.set(mask, { from: from.version, text });
    return text;
  }

  private diff(from: RouteTableSpec, to: RouteTableSpec, mask: number): string | null {
    const before = this.routeTexts(from, mask);
    const after = this.routeTexts(to, mask);
    const limit = after.size / 2;
    const upsert: string[] = [];
    const remove: string[] = [];
    for (const [id, text] of after) {
      if (before.get(id) === text) continue;
      if (upsert.push(text) > limit) return null;
    }
    for (const id of before.keys()) {
      if (after.has(id)) continue;
      if (remove.push(id) + upsert.length > limit) return null;
    }
    return `event: delta\ndata: {"base":${from.version},"version":${to.version},"upsert":[${upsert.join(',')}],"remove":${JSON.stringify(remove)}}\n\n`;
  }

  private routeTexts(t: RouteTableSpec, mask: number): RouteTexts {
    let byMask = this.texts.get(t);
    if (byMask === undefined) this.texts.set(t, (byMask = new Map()));
    let texts = byMask.get(mask);
    if (texts === undefined) {
      texts = new Map();
      for (const r of this.readable(t, mask).routes) {
        let text = this.text.get(r);
        if (text === undefined) this.text.set(r, (text = JSON.stringify(r)));
        texts.set(r.id, text);
      }
      byMask.set(mask, texts);
    }
    return texts;
  }
}
