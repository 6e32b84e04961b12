import { describe, expect, it } from 'vitest';
import { RouteStats } from '../../proxy/metrics/route-stats.js';
import type { MeterEntry } from '../../shared/metering/schema.js';

describe('route meters (metrics/route-stats.ts)', () => {
  it('a route nobody called reports nothing; refusals and unrouted answers report on the route with no endpoint, as 4xx', () => {
    const s = new RouteStats('r1');
    const out: MeterEntry[] = [];
    s.drainMeters(out);
    expect(out).toEqual([]);
    // two requests refused at admission (4xx), one answered 503 without an endpoint
    s.refused += 2;
    s.unrouted.count(503, true, 10, 20);
    s.drainMeters(out);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ route: 'r1', endpoint: '', requests: 3, status: [0, 0, 0, 2, 1], proxyErrors: 1, bytesIn: 10, bytesOut: 20 });
    // counted once: the next interval is empty
    const next: MeterEntry[] = [];
    s.drainMeters(next);
    expect(next).toEqual([]);
  });
});
