import { describe, expect, it } from 'vitest';
import { KPA_DEFAULTS, decide, newKpaState, targetPerInstance, type AppSettings, type Sample } from '../../control-plane/autoscale/kpa.js';

const app: AppSettings = { minInstances: 0, maxInstances: 10, containerConcurrency: 10, targetUtilization: 70, scaleDownDelayMs: 0 };
const cfg = { ...KPA_DEFAULTS, stableWindowMs: 60_000, scaleToZeroGraceMs: 30_000 };
/** samples every 2 s over [from, to) at a constant concurrency */
function flat(from: number, to: number, c: number): Sample[] {
  const out: Sample[] = [];
  for (let t = from; t < to; t += 2000) out.push({ at: t, concurrency: c });
  return out;
}

describe('KPA decisions', () => {
  it('target per instance: concurrency × utilization, 100 when unlimited', () => {
    expect(targetPerInstance(app)).toBe(7);
    expect(targetPerInstance({ ...app, containerConcurrency: 0 })).toBe(100);
  });

  it('stable load: ⌈average ÷ target⌉', () => {
    const s = newKpaState(0);
    const d = decide(60_000, 3, flat(0, 60_001, 20), app, s, cfg);
    expect(d.desired).toBe(3); // 20 / 7 → 3
    expect(d.panic).toBe(false);
  });

  it('a burst beyond 200% of capacity panics: follows the panic window, never scales down while panicking', () => {
    const s = newKpaState(0);
    const samples = [...flat(0, 54_000, 7), ...flat(54_000, 60_001, 40)];
    const d = decide(60_000, 1, samples, app, s, cfg);
    expect(d.panic).toBe(true);
    expect(d.desired).toBe(6); // panic window average 40 / 7
    // load gone, still within the stable window since panic began: no scale-down
    const calm = decide(70_000, 6, [...samples, ...flat(60_002, 70_001, 0)], app, s, cfg);
    expect(calm.panic).toBe(true);
    expect(calm.desired).toBeGreaterThanOrEqual(6);
  });

  it('scale-down is rate limited (÷2 per decision) and clamped to min/max', () => {
    const s = newKpaState(0);
    expect(decide(60_000, 8, flat(0, 60_001, 7), app, s, cfg).desired).toBe(4);
    expect(decide(60_000, 1, flat(0, 60_001, 1000), { ...app, maxInstances: 5 }, newKpaState(0), cfg).desired).toBe(5);
    expect(decide(60_000, 0, flat(0, 60_001, 0), { ...app, minInstances: 2 }, newKpaState(0), cfg).desired).toBe(2);
  });

  it('zero only after the stable window plus the grace period without traffic', () => {
    const s = newKpaState(0);
    const busy = flat(0, 10_000, 5);
    expect(decide(10_000, 1, busy, app, s, cfg).desired).toBe(1);
    // quiet since 8 s: at 60 s (< 8 + 60 + 30) still one instance
    expect(decide(60_000, 1, flat(8_000, 60_001, 0), app, s, cfg).desired).toBe(1);
    // at 100 s: zero
    const d = decide(100_000, 1, flat(40_000, 100_001, 0), app, s, cfg);
    expect(d.desired).toBe(0);
    expect(d.reason).toMatch(/scale to zero/);
  });

  it('scale_down_delay_s holds the highest recent count', () => {
    const s = newKpaState(0);
    const hold = { ...app, scaleDownDelayMs: 30_000 };
    expect(decide(60_000, 4, flat(0, 60_001, 28), hold, s, cfg).desired).toBe(4);
    expect(decide(62_000, 4, flat(2_000, 62_001, 0), hold, s, cfg).desired).toBe(4);
  });
});
