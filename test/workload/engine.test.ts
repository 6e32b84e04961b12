/**
 * The workload engine against real loopback servers: rate accuracy, Poisson arrivals, the open
 * model under a stalled server (coordinated omission), stop, failures, and input checks.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { runWorkload } from '../../bench/workload/engine.js';
import { checkPattern, createSchedule, expectedRequests, peakRate, rateAt } from '../../bench/workload/patterns.js';
import { prepareRequest } from '../../bench/workload/request.js';
import { failedThresholds, parseThresholds, shownValue } from '../../bench/workload/thresholds.js';
import { freePort } from '../helpers/ports.js';

interface TestServer {
  url: string;
  arrivals: number[];
  hosts: string[];
  server: Server;
}

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse, t: TestServer) => void = (_q, res) => res.end('ok')): Promise<TestServer> {
  const t = { arrivals: [] as number[], hosts: [] as string[] } as unknown as TestServer;
  const server = createServer((req, res) => {
    t.arrivals.push(performance.now());
    t.hosts.push(req.headers.host ?? '');
    handler(req, res, t);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  t.server = server;
  t.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return t;
}

function stats(xs: number[]): { mean: number; cv: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length);
  return { mean, cv: sd / mean };
}

describe('rate accuracy (open model)', () => {
  it('constant 200 req/s for 5 s sends 1,000 requests (±3 %), evenly over the seconds', async () => {
    const s = await serve();
    const m = await runWorkload({ url: `${s.url}/x`, pattern: 'constant', rps: 200, duration_seconds: 5 }).done;
    expect(m.scheduled_requests).toBe(1000);
    expect(s.arrivals.length).toBeGreaterThanOrEqual(970);
    expect(s.arrivals.length).toBeLessThanOrEqual(1030);
    expect(m.successful_requests).toBe(s.arrivals.length);
    expect(m.status_code_distribution).toEqual({ 200: s.arrivals.length });
    // the server saw the schedule: the arrivals span ~5 s and each second got ~200
    const t0 = s.arrivals[0];
    const span = (s.arrivals[s.arrivals.length - 1] - t0) / 1000;
    expect(span).toBeGreaterThan(4.9);
    expect(span).toBeLessThan(5.2);
    const perSecond = [0, 0, 0, 0, 0];
    for (const a of s.arrivals) perSecond[Math.min(4, Math.floor((a - t0) / 1000))]++;
    for (const n of perSecond) expect(Math.abs(n - 200)).toBeLessThanOrEqual(20);
    expect(m.series.filter((p) => p.t < 5).map((p) => p.target_rps)).toEqual([200, 200, 200, 200, 200]);
    expect(m.target_rps).toBe(200);
    expect(Math.abs(m.requests_per_second - 200)).toBeLessThanOrEqual(6);
    expect(m.p50_latency_ms).not.toBeNull();
    expect(m.p50_latency_ms!).toBeLessThan(m.p99_latency_ms! + 0.001);
    // every latency includes its send delay, so each percentile of the delays is below the latency's
    expect(m.send_delay_p50_ms).not.toBeNull();
    expect(m.send_delay_p50_ms!).toBeLessThanOrEqual(m.p50_latency_ms! * 1.01 + 0.001);
    expect(m.send_delay_p99_ms!).toBeLessThanOrEqual(m.p99_latency_ms! * 1.01 + 0.001);
  });

  it('ramp 100 → 300 req/s over 3 s schedules the integral (600) with a rising series', async () => {
    const s = await serve();
    const m = await runWorkload({ url: s.url, pattern: 'ramp', rps: 100, ramp_to_rps: 300, duration_seconds: 3 }).done;
    expect(Math.abs(m.scheduled_requests - 600)).toBeLessThanOrEqual(2);
    expect(Math.abs(s.arrivals.length - 600)).toBeLessThanOrEqual(18);
    const t = m.series.filter((p) => p.t < 3).map((p) => p.target_rps);
    expect(t[0]).toBeCloseTo(133.3, 0);
    expect(t[2]).toBeCloseTo(266.7, 0);
  });
});

describe('poisson arrivals', () => {
  it('the schedule has exponential gaps: mean 1/rps, coefficient of variation ≈ 1', () => {
    const sched = createSchedule({ pattern: 'poisson', rps: 500, duration_seconds: 60 });
    const times: number[] = [];
    for (let t = sched.next(); t !== Infinity; t = sched.next()) times.push(t);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    const { mean, cv } = stats(gaps);
    expect(times.length).toBeGreaterThan(29_000);
    expect(times.length).toBeLessThan(31_000);
    expect(mean).toBeGreaterThan(1.94);
    expect(mean).toBeLessThan(2.06);
    expect(cv).toBeGreaterThan(0.95);
    expect(cv).toBeLessThan(1.05);
  });

  it('a server sees Poisson arrivals at 200 req/s (gap mean ≈ 5 ms, CV ≈ 1) with precise timing', async () => {
    // (by default, below 5,000 req/s, sends are timed by 1 ms timers: gaps under a millisecond
    // collapse into small bursts, which raises the CV a little; --precise keeps the shape)
    const s = await serve();
    const m = await runWorkload({ url: s.url, pattern: 'poisson', rps: 200, duration_seconds: 4, precise: true }).done;
    const gaps = s.arrivals.slice(1).map((t, i) => t - s.arrivals[i]);
    const { mean, cv } = stats(gaps);
    expect(s.arrivals.length).toBeGreaterThan(650);
    expect(s.arrivals.length).toBeLessThan(950);
    expect(mean).toBeGreaterThan(4.2);
    expect(mean).toBeLessThan(6);
    // the schedule itself is checked exactly above; timestamps taken by a server's event loop add
    // its scheduling noise (a lot on a busy machine: even sends measured this way reached CV 1.4 with
    // the load average at 6), so this bound only rules out an even sender on a quiet machine and a
    // bursty one anywhere
    expect(cv).toBeGreaterThan(0.8);
    expect(cv).toBeLessThan(1.6);
    expect(m.failed_requests).toBe(0);
  });
});

describe('coordinated omission', () => {
  it('a server that stalls 1 s mid-run shows p99 ≥ 500 ms while requests keep their schedule', async () => {
    let stallFrom = Infinity;
    let stallUntil = 0;
    const held: ServerResponse[] = [];
    const s = await serve((_req, res) => {
      const now = performance.now();
      if (stallFrom === Infinity) {
        stallFrom = now + 1500;
        stallUntil = stallFrom + 1000;
        setTimeout(() => { for (const r of held.splice(0)) r.end('late'); }, stallUntil - now);
      }
      if (now >= stallFrom && now < stallUntil) held.push(res);
      else res.end('ok');
    });
    const m = await runWorkload({ url: s.url, pattern: 'constant', rps: 200, duration_seconds: 4 }).done;
    // the stall is in the percentiles: ~25 % of requests waited up to a second
    expect(m.p99_latency_ms!).toBeGreaterThanOrEqual(500);
    expect(m.max_latency_ms!).toBeGreaterThanOrEqual(800);
    expect(m.p50_latency_ms!).toBeLessThan(100);
    // and the sender did not slow down: ~200 requests arrived during the stalled second (a busy
    // machine's CI run had 178: at least 150; a sender held back by the stall gets few or none)
    const during = s.arrivals.filter((a) => a >= stallFrom && a < stallUntil).length;
    expect(during).toBeGreaterThanOrEqual(150);
    expect(during).toBeLessThanOrEqual(230);
    // late = sent > 10 ms after the intended start. Without enough connections every request from the
    // stall on would be late (and arrive after it, which the count above rules out). Some are late
    // for real: the 200 held answers arrive at once and take the loop a while, more so on a busy
    // machine (which also delays a few anywhere): at most 25 % of the stalled seconds' sends (one
    // busy run had 18 %; held back by the stall, the half of each of those seconds inside it would
    // be late: 50 %), 10 % overall
    for (const p of m.series.filter((x) => x.t === 1 || x.t === 2)) expect(p.late, `second ${p.t}`).toBeLessThanOrEqual(p.sent * 0.25);
    expect(m.late_requests).toBeLessThanOrEqual(80);
    expect(m.dropped_requests).toBe(0);
    expect(m.failed_requests).toBe(0);
    expect(Math.abs(m.total_requests - 800)).toBeLessThanOrEqual(24);
    expect(m.connections_max).toBeGreaterThanOrEqual(150); // connections grew to carry the held requests
  });
});

describe('stop, failures, limits', () => {
  it('stop() ends a long run within a few seconds with what was measured', async () => {
    const s = await serve();
    const r = runWorkload({ url: s.url, pattern: 'constant', rps: 100, duration_seconds: 60 });
    await new Promise((res) => setTimeout(res, 1200));
    const t = Date.now();
    r.stop();
    const m = await r.done;
    expect(Date.now() - t).toBeLessThan(2500);
    expect(m.stopped).toBe(true);
    expect(m.total_requests).toBeGreaterThan(90);
    expect(m.total_requests).toBeLessThan(200);
    expect(m.duration_seconds).toBeLessThan(3);
  });

  it('stop() while the first connections are being made ends the run for good (no timer left behind)', async () => {
    const s = await serve();
    let after = 0;
    let ended = false;
    const r = runWorkload({ url: s.url, pattern: 'constant', rps: 50, duration_seconds: 30, connections: 64 }, () => { if (ended) after++; });
    r.stop();
    const m = await r.done;
    ended = true;
    expect(m.stopped).toBe(true);
    // a run that began after it finished would report progress every second, in a thread nobody counts
    await new Promise((res) => setTimeout(res, 2500));
    expect(after).toBe(0);
  });

  it('a refused port is a stream of ECONNREFUSED errors at the schedule, not a hang', async () => {
    const port = await freePort();
    const m = await runWorkload({ url: `http://127.0.0.1:${port}/`, pattern: 'constant', rps: 100, duration_seconds: 1 }).done;
    expect(m.successful_requests).toBe(0);
    expect(m.errors.ECONNREFUSED).toBeGreaterThan(80);
    expect(m.error_rate).toBe(100);
  });

  it('a server that never answers is a timeout per request', async () => {
    const s = await serve(() => { /* never answers */ });
    const m = await runWorkload({ url: s.url, pattern: 'constant', rps: 50, duration_seconds: 1, timeout_ms: 300 }).done;
    expect(m.successful_requests).toBe(0);
    expect(m.errors.timeout).toBe(50);
    expect(m.total_requests).toBe(50);
  });

  it('5xx answers count as failed, with their status codes', async () => {
    let n = 0;
    const s = await serve((_q, res) => { res.statusCode = n++ % 2 ? 503 : 200; res.end(); });
    const m = await runWorkload({ url: s.url, pattern: 'constant', rps: 100, duration_seconds: 1, method: 'post', body: 'hello', headers: { 'x-test': 'a' }, host: 'shop.localhost' }).done;
    expect(m.status_code_distribution['503']).toBe(50);
    expect(m.failed_requests).toBe(50);
    expect(m.error_rate).toBe(50);
    expect(s.hosts.every((h) => h === 'shop.localhost')).toBe(true);
  });

  it('a forced connection count is kept', async () => {
    const s = await serve();
    const m = await runWorkload({ url: s.url, pattern: 'constant', rps: 300, duration_seconds: 1, connections: 3 }).done;
    expect(m.connections_max).toBe(3);
    expect(m.successful_requests).toBe(300);
  });
});

describe('inputs', () => {
  it('patterns: shapes, peaks and refusals', () => {
    expect(checkPattern({ pattern: 'ramp', rps: 10, duration_seconds: 10 })).toMatch(/ramp_to_rps/);
    expect(checkPattern({ pattern: 'step', rps: 10, duration_seconds: 10 })).toMatch(/stages/);
    expect(checkPattern({ pattern: 'nope' as never, rps: 10, duration_seconds: 10 })).toMatch(/pattern must be/);
    expect(checkPattern({ pattern: 'constant', rps: -1, duration_seconds: 10 })).toMatch(/rps/);
    expect(checkPattern({ pattern: 'step', rps: 0.5, duration_seconds: 10, stages: [{ duration_seconds: 0, rps: 3 }] })).toMatch(/stages\[0\]/);
    const step = { pattern: 'step' as const, rps: 1, duration_seconds: 30, stages: [{ duration_seconds: 10, rps: 100 }, { duration_seconds: 10, rps: 500 }] };
    expect(checkPattern(step)).toBeNull();
    expect(rateAt(step, 5)).toBe(100);
    expect(rateAt(step, 15)).toBe(500);
    expect(rateAt(step, 25)).toBe(500);
    expect(peakRate(step)).toBe(500);
    // an hour of silence between two stages is crossed at once, and the schedule stays exact
    // (98 silent stages: walked a millisecond at a time, each step looked through the stages)
    const silent = Array.from({ length: 98 }, () => ({ duration_seconds: 36.5, rps: 0 }));
    const gap = { pattern: 'step' as const, rps: 1, duration_seconds: 3587, stages: [{ duration_seconds: 5, rps: 10 }, ...silent, { duration_seconds: 5, rps: 10 }] };
    const t0 = performance.now();
    const sched = createSchedule(gap);
    const at: number[] = [];
    for (let x = sched.next(); x !== Infinity; x = sched.next()) at.push(x);
    expect(performance.now() - t0).toBeLessThan(300);
    expect(at).toHaveLength(100);
    expect(at.filter((x) => x >= 5000 && x < 3_582_000)).toEqual([]);
    expect(at[50]).toBeGreaterThanOrEqual(3_582_000);
    // a stage that would begin after the run ends never sends: it does not count toward the peak
    const late = { pattern: 'step' as const, rps: 1, duration_seconds: 60, stages: [{ duration_seconds: 60, rps: 1 }, { duration_seconds: 1, rps: 10_000 }] };
    expect(peakRate(late)).toBe(1);
    expect(rateAt(late, 59.9)).toBe(1);
    const spike = { pattern: 'spike' as const, rps: 100, ramp_to_rps: 1000, duration_seconds: 10 };
    expect(rateAt(spike, 1)).toBe(100);
    expect(rateAt(spike, 4.5)).toBe(1000);
    expect(rateAt(spike, 6)).toBe(100);
    const wave = { pattern: 'wave' as const, rps: 100, ramp_to_rps: 300, duration_seconds: 30 };
    expect(rateAt(wave, 0)).toBeCloseTo(100);
    expect(rateAt(wave, 5)).toBeCloseTo(300);
    const gradual = { pattern: 'gradual' as const, rps: 100, duration_seconds: 10 };
    expect(rateAt(gradual, 0)).toBe(0);
    expect(rateAt(gradual, 5)).toBe(100);
    expect(expectedRequests({ pattern: 'constant', rps: 200, duration_seconds: 5 })).toBeCloseTo(1000);
  });

  it('requests: no header or path can smuggle a second line', () => {
    expect(() => prepareRequest({ url: 'http://127.0.0.1:1/', headers: { 'x-a': 'b\r\nx-evil: 1' } })).toThrow(/control characters/);
    expect(() => prepareRequest({ url: 'http://127.0.0.1:1/', headers: { 'bad name': 'x' } })).toThrow(/not valid/);
    expect(() => prepareRequest({ url: 'http://127.0.0.1:1/', path: '/a b' })).toThrow(/path/);
    expect(() => prepareRequest({ url: 'http://127.0.0.1:1/', host: 'a\r\nb' })).toThrow(/host/);
    expect(() => prepareRequest({ url: 'http://127.0.0.1:1/', headers: { 'Content-Length': '5' } })).toThrow(/set by the load generator/);
    expect(() => prepareRequest({ url: 'https://example.com/' })).toThrow(/only http/);
    expect(() => prepareRequest({ url: 'not a url' })).toThrow(/not a URL/);
    expect(() => prepareRequest({ url: 'http://127.0.0.1:1/', method: 'GE T' })).toThrow(/method/);
    const p = prepareRequest({ url: 'http://127.0.0.1:1/q?x=1', method: 'post', body: 'hi', host: 'shop.localhost' });
    expect(p.head).toBe('POST /q?x=1 HTTP/1.1\r\nhost: shop.localhost\r\nuser-agent: berth-load\r\ncontent-length: 2\r\n\r\n');
  });

  it('thresholds: parse, compare, refuse nonsense', () => {
    const ts = parseThresholds('p99>200ms, error_rate>1%,dropped>0,p50>=1s');
    expect(ts.map((t) => [t.metric, t.op, t.value])).toEqual([['p99', '>', 200], ['error_rate', '>', 1], ['dropped', '>', 0], ['p50', '>=', 1000]]);
    const m = { p99_latency_ms: 250, p50_latency_ms: 3, error_rate: 0.5, dropped_requests: 0 } as never;
    expect(failedThresholds(ts, m).map((f) => f.threshold.text)).toEqual(['p99>200ms']);
    // the actual value with its unit (from a walkthrough: "actual 25.039", of what?)
    expect([shownValue('p99', 25.0391), shownValue('error_rate', 1.5), shownValue('rps', 99.5), shownValue('dropped', 3), shownValue('p50', null)])
      .toEqual(['25.0ms', '1.5%', '99.5 req/s', '3', 'n/a']);
    expect(() => parseThresholds('p99>>1')).toThrow(/not a condition/);
    expect(() => parseThresholds('latency>1ms')).toThrow(/unknown metric/);
    expect(() => parseThresholds('p99>1%')).toThrow(/latency/);
    expect(() => parseThresholds('late>1ms')).toThrow(/no time unit/);
    expect(() => parseThresholds(' , ')).toThrow(/at least one/);
  });
});
