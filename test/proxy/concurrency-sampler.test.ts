/**
 * The concurrency the proxy reports for the autoscaler (proxy/metrics/concurrency.ts): 100 ms
 * samples of the in-flight count missed short requests, so steady light traffic read as none and
 * the app was scaled to zero under it; the time the answered requests took counts too.
 */
import { afterEach, expect, it, vi } from 'vitest';
import { ConcurrencySampler } from '../../proxy/metrics/concurrency.js';
import { RouteStats } from '../../proxy/metrics/route-stats.js';

afterEach(() => { vi.useRealTimers(); });

it('short requests answered between samples are not zero; a second without any is; held requests count as sampled', () => {
  vi.useFakeTimers();
  const light = new RouteStats('light');
  const idle = new RouteStats('idle');
  const held = new RouteStats('held');
  const s = new ConcurrencySampler(() => [light, idle, held]);
  s.start();
  held.inflight = 2;
  for (let i = 0; i < 4; i++) light.observeLatency(1); // 4 requests of 1 ms, never in flight at a sample
  vi.advanceTimersByTime(1000);
  expect(light.concurrency).toBeCloseTo(0.004, 6);
  expect(idle.concurrency).toBe(0);
  expect(held.concurrency).toBe(2);
  expect(s.active).toBe(true);
  // answered in no measurable time: still above zero
  light.observeLatency(0);
  vi.advanceTimersByTime(1000);
  expect(light.concurrency).toBeGreaterThan(0);
  // a request of a minute that ends: in flight at every sample, and one second's worth, not 60
  held.inflight = 1;
  vi.advanceTimersByTime(900);
  held.inflight = 0;
  held.observeLatency(60_000);
  vi.advanceTimersByTime(100);
  expect(held.concurrency).toBe(1);
  // a quiet second: zero again, and the proxy is not busy
  held.inflight = 0;
  vi.advanceTimersByTime(1000);
  expect([light.concurrency, held.concurrency, s.active]).toEqual([0, 0, false]);
  s.stop();
});
