import { UsageError } from '../../shared/cli/args.js';
import { existsSync, readFileSync } from 'node:fs';

/**
 * Prices, in integer micro-units of `currency` (1 USD = 1 000 000), per a whole unit so that
 * every published rate is an integer: per vCPU-hour, per GiB-hour, per million requests, per
 * container-minute. Every cost is computed with BigInt from integer quantities (milli-vCPU ×
 * milliseconds, MiB × milliseconds) and rounded half up to a micro-unit once per line.
 *
 * Plans: `cloud_run` (default; Cloud Run's published tier-1 request-based rates: $0.000024 per
 * vCPU-second = 86 400 µ$/vCPU-hour, $0.0000025 per GiB-second = 9 000 µ$/GiB-hour, $0.40 per
 * million requests; instance time rounded up to 100 ms per run; no free tier) or `per_minute` (the
 * original platform's flat $0.01 per container-minute, prorated per 100 ms; requests free).
 */
export interface Pricing {
  plan: 'cloud_run' | 'per_minute';
  currency: string;
  vcpu_hour_micros: number;
  gib_hour_micros: number;
  million_requests_micros: number;
  container_minute_micros: number;
  /** instance time of a run is rounded up to a multiple of this (Cloud Run: 100 ms) */
  rounding_ms: number;
}

export const DEFAULT_PRICING: Pricing = {
  plan: 'cloud_run',
  currency: 'USD',
  vcpu_hour_micros: 86_400,
  gib_hour_micros: 9_000,
  million_requests_micros: 400_000,
  container_minute_micros: 10_000,
  rounding_ms: 100,
};

const INT_FIELDS = ['vcpu_hour_micros', 'gib_hour_micros', 'million_requests_micros', 'container_minute_micros', 'rounding_ms'] as const;

/**
 * BERTH_PRICING: a JSON object, or the path of a file holding one; fields not given keep the
 * defaults. Throws with a message naming the field when a value is not allowed.
 */
export function loadPricing(raw: string | undefined): Pricing {
  if (raw === undefined || raw.trim() === '') return { ...DEFAULT_PRICING };
  let text = raw.trim();
  if (!text.startsWith('{')) {
    if (!existsSync(text)) throw new UsageError(`BERTH_PRICING: "${text}" is neither a JSON object nor a file`);
    text = readFileSync(text, 'utf8');
  }
  let v: unknown;
  try { v = JSON.parse(text); } catch (e) { throw new UsageError(`BERTH_PRICING is not valid JSON: ${(e as Error).message}`); }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new UsageError('BERTH_PRICING must be a JSON object');
  const o = v as Record<string, unknown>;
  const out: Pricing = { ...DEFAULT_PRICING };
  for (const k of Object.keys(o)) {
    if (k === 'plan') {
      if (o.plan !== 'cloud_run' && o.plan !== 'per_minute') throw new UsageError('BERTH_PRICING.plan must be "cloud_run" or "per_minute"');
      out.plan = o.plan;
    } else if (k === 'currency') {
      if (typeof o.currency !== 'string' || !/^[A-Z]{3}$/.test(o.currency)) throw new UsageError('BERTH_PRICING.currency must be a three-letter code like "USD"');
      out.currency = o.currency;
    } else if ((INT_FIELDS as readonly string[]).includes(k)) {
      const n = o[k];
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > 1e12 || (k === 'rounding_ms' && n < 1)) {
        throw new UsageError(`BERTH_PRICING.${k} must be a whole number of micro-units (0 … 10^12${k === 'rounding_ms' ? ', at least 1' : ''})`);
      }
      (out as unknown as Record<string, number>)[k] = n;
    } else throw new UsageError(`BERTH_PRICING: unknown field "${k}" (known: plan, currency, ${INT_FIELDS.join(', ')})`);
  }
  return out;
}

/** a / b rounded half up (a, b ≥ 0). */
export function divRound(a: bigint, b: bigint): bigint {
  return (a * 2n + b) / (2n * b);
}

/** Instance time of one run in billed milliseconds (rounded up to `rounding_ms`). */
export function billedMs(durationMs: number, p: Pricing): number {
  const r = p.rounding_ms;
  return Math.ceil(Math.max(0, Math.round(durationMs)) / r) * r;
}

export const milliVcpu = (vcpu: number) => Math.round(vcpu * 1000);
export const mib = (bytes: number) => Math.ceil(bytes / 1_048_576);

/**
 * The integer quantities of one run: milli-vCPU × ms and MiB × ms (exact), from which
 * vCPU-seconds and GiB-seconds are derived for display.
 */
export interface RunQuantities {
  ms: number;
  vcpuMilliMs: bigint;
  mibMs: bigint;
}

export function runQuantities(durationMs: number, vcpu: number, memoryBytes: number, p: Pricing): RunQuantities {
  const ms = billedMs(durationMs, p);
  return { ms, vcpuMilliMs: BigInt(milliVcpu(vcpu)) * BigInt(ms), mibMs: BigInt(mib(memoryBytes)) * BigInt(ms) };
}

/** Cost lines of instance time, in micro-units. */
export function cpuCost(q: { vcpuMilliMs: bigint }, p: Pricing): bigint {
  return p.plan === 'cloud_run' ? divRound(q.vcpuMilliMs * BigInt(p.vcpu_hour_micros), 1000n * 3_600_000n) : 0n;
}
export function memoryCost(q: { mibMs: bigint }, p: Pricing): bigint {
  return p.plan === 'cloud_run' ? divRound(q.mibMs * BigInt(p.gib_hour_micros), 1024n * 3_600_000n) : 0n;
}
export function instanceMinuteCost(q: { ms: number }, p: Pricing): bigint {
  return p.plan === 'per_minute' ? divRound(BigInt(q.ms) * BigInt(p.container_minute_micros), 60_000n) : 0n;
}
export function requestsCost(requests: number, p: Pricing): bigint {
  return p.plan === 'cloud_run' ? divRound(BigInt(requests) * BigInt(p.million_requests_micros), 1_000_000n) : 0n;
}

/** The cost of one run (CPU + memory, or container-minutes), micro-units. */
export function runCost(q: RunQuantities, p: Pricing): bigint {
  return cpuCost(q, p) + memoryCost(q, p) + instanceMinuteCost(q, p);
}

/** Micro-units as a decimal string: 1234567 → "1.234567". */
export function formatMicros(m: bigint | number): string {
  const v = BigInt(m);
  const neg = v < 0n;
  const a = neg ? -v : v;
  return `${neg ? '-' : ''}${a / 1_000_000n}.${(a % 1_000_000n).toString().padStart(6, '0')}`;
}

export const vcpuSeconds = (q: { vcpuMilliMs: bigint }) => Number(q.vcpuMilliMs) / 1e6;
export const gibSeconds = (q: { mibMs: bigint }) => Number(q.mibMs) / 1024 / 1000;
