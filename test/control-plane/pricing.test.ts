import { describe, expect, it } from 'vitest';
import {
  DEFAULT_PRICING, billedMs, cpuCost, divRound, formatMicros, instanceMinuteCost, loadPricing, memoryCost, requestsCost, runCost, runQuantities,
} from '../../control-plane/billing/pricing.js';
import { quantileMs } from '../../control-plane/metering/histogram.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Pricing arithmetic: integers only (micro-units), Cloud Run's rates by default, the flat plan. */
describe('pricing', () => {
  const p = DEFAULT_PRICING;

  it('defaults to Cloud Run\'s published rates as integer micro-units per whole unit', () => {
    expect(p).toMatchObject({ plan: 'cloud_run', currency: 'USD', vcpu_hour_micros: 86_400, gib_hour_micros: 9_000, million_requests_micros: 400_000, container_minute_micros: 10_000, rounding_ms: 100 });
  });

  it('rounds instance time up to 100 ms and prices one vCPU-second at 24 µ$ and one GiB-second at 2.5 µ$ (half up)', () => {
    expect(billedMs(1, p)).toBe(100);
    expect(billedMs(100, p)).toBe(100);
    expect(billedMs(100.4, p)).toBe(100);
    expect(billedMs(101, p)).toBe(200);
    expect(billedMs(0, p)).toBe(0);
    const oneSecond = runQuantities(1000, 1, 1024 ** 3, p);
    expect(cpuCost(oneSecond, p)).toBe(24n);
    expect(memoryCost(oneSecond, p)).toBe(3n); // 2.5 rounds half up
    expect(runCost(oneSecond, p)).toBe(27n);
    // an hour of 0.5 vCPU and 512 MiB: 43 200 + 4 500
    const hour = runQuantities(3_600_000, 0.5, 512 * 1024 ** 2, p);
    expect(cpuCost(hour, p)).toBe(43_200n);
    expect(memoryCost(hour, p)).toBe(4_500n);
    // 250 ms of 1 vCPU is billed as 300 ms: 7.2 µ$ → 7
    expect(cpuCost(runQuantities(250, 1, 0, p), p)).toBe(7n);
    // a year of 1000 vCPUs stays exact in BigInt
    expect(cpuCost(runQuantities(365 * 86_400_000, 1000, 0, p), p)).toBe(86_400n * 1000n * 24n * 365n);
  });

  it('prices requests per million, and the flat per-container-minute plan prorated', () => {
    expect(requestsCost(1_000_000, p)).toBe(400_000n);
    expect(requestsCost(1, p)).toBe(0n); // 0.4 µ$ rounds to 0
    expect(requestsCost(2, p)).toBe(1n); // 0.8 → 1
    expect(requestsCost(1234, p)).toBe(494n); // 493.6 → 494
    const flat = loadPricing('{"plan":"per_minute"}');
    const q = runQuantities(90_000, 2, 1024 ** 3, flat);
    expect(instanceMinuteCost(q, flat)).toBe(15_000n); // 1.5 minutes × 10 000
    expect(runCost(q, flat)).toBe(15_000n);
    expect(requestsCost(1_000_000, flat)).toBe(0n);
    expect(cpuCost(q, flat)).toBe(0n);
  });

  it('divides with half-up rounding and formats micro-units without floats', () => {
    expect(divRound(5n, 2n)).toBe(3n);
    expect(divRound(4n, 3n)).toBe(1n);
    expect(divRound(0n, 7n)).toBe(0n);
    expect(formatMicros(1_234_567n)).toBe('1.234567');
    expect(formatMicros(27)).toBe('0.000027');
    expect(formatMicros(0)).toBe('0.000000');
  });

  it('reads BERTH_PRICING from a JSON value or a file and refuses what is not allowed, naming the field', () => {
    expect(loadPricing(undefined)).toEqual(DEFAULT_PRICING);
    expect(loadPricing('{"vcpu_hour_micros": 100000, "currency": "EUR"}')).toMatchObject({ vcpu_hour_micros: 100_000, currency: 'EUR', gib_hour_micros: 9_000 });
    const dir = mkdtempSync(join(tmpdir(), 'berth-pricing-'));
    try {
      writeFileSync(join(dir, 'p.json'), '{"plan":"per_minute","container_minute_micros":20000}');
      expect(loadPricing(join(dir, 'p.json'))).toMatchObject({ plan: 'per_minute', container_minute_micros: 20_000 });
    } finally { rmSync(dir, { recursive: true, force: true }); }
    expect(() => loadPricing('{"vcpu_hour_micros": 0.5}')).toThrow(/vcpu_hour_micros/);
    expect(() => loadPricing('{"vcpu_hour_micros": -1}')).toThrow(/vcpu_hour_micros/);
    expect(() => loadPricing('{"plan": "free"}')).toThrow(/plan/);
    expect(() => loadPricing('{"cpu": 1}')).toThrow(/unknown field "cpu"/);
    expect(() => loadPricing('{"rounding_ms": 0}')).toThrow(/rounding_ms/);
    expect(() => loadPricing('{nope')).toThrow(/not valid JSON/);
    expect(() => loadPricing('/nonexistent/pricing.json')).toThrow(/neither/);
    expect(() => loadPricing('[1]')).toThrow(/object/);
  });
});

describe('latency quantiles from the metered histogram', () => {
  it('interpolates inside the bucket, answers null when empty and the largest bound for +Inf', () => {
    const b = new Array(15).fill(0);
    expect(quantileMs(b, 0.5)).toBeNull();
    b[0] = 100; // all ≤ 0.5 ms
    expect(quantileMs(b, 0.5)).toBe(0.25);
    const c = new Array(15).fill(0);
    c[4] = 50; // (5, 10]
    c[5] = 50; // (10, 25]
    expect(quantileMs(c, 0.5)).toBe(10);
    expect(quantileMs(c, 0.99)).toBeCloseTo(24.7, 5);
    const d = new Array(15).fill(0);
    d[14] = 1;
    expect(quantileMs(d, 0.5)).toBe(10_000);
  });
});
