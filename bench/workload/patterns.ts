/**
 * Load patterns: a target rate over time, and the schedule of intended start times it implies.
 *
 * Every pattern is a function `rateAt(t)` (requests per second at `t` seconds into the run).
 * The deterministic ones are turned into start times by integrating the rate: request i (from 0)
 * is due when the expected count ∫₀ᵗ rate reaches i, so a constant 200 req/s for 5 s schedules
 * exactly 1,000 requests, evenly spaced. `poisson` draws exponential gaps with mean 1/rps instead
 * (a memoryless arrival process: independent users).
 *
 * Shapes (D = duration, `peak` = ramp_to_rps):
 * - constant  rps throughout
 * - ramp      linear from rps to ramp_to_rps over D
 * - step      the listed stages in order (each {duration_seconds, rps}; the last one holds to the
 *             end); without stages, four equal steps from rps to ramp_to_rps
 * - spike     rps, then ramp_to_rps (default 5 × rps) from 40 % to 50 % of D, then rps again
 * - wave      a cosine between rps and ramp_to_rps (default 2 × rps), three periods over D
 * - gradual   a smooth warm-up from 0 to rps over the first 30 % of D, then rps
 * - poisson   exponential gaps, mean rate rps
 */

export const PATTERNS = ['constant', 'ramp', 'step', 'spike', 'wave', 'gradual', 'poisson'] as const;
export type PatternName = (typeof PATTERNS)[number];

export interface Stage {
  duration_seconds: number;
  rps: number;
}

export interface PatternSpec {
  pattern: PatternName;
  /** base rate (requests per second) */
  rps: number;
  duration_seconds: number;
  ramp_to_rps?: number;
  stages?: Stage[];
}

/** Most stages a step pattern may list. */
export const MAX_STAGES = 100;

/** A human-readable reason the spec is unusable, or null. Limits (max rate, max duration) are the caller's. */
export function checkPattern(p: PatternSpec): string | null {
  if (!(PATTERNS as readonly string[]).includes(p.pattern)) return `pattern must be one of ${PATTERNS.join(', ')}`;
  if (!Number.isFinite(p.rps) || p.rps <= 0) return 'rps must be a positive number';
  if (!Number.isFinite(p.duration_seconds) || p.duration_seconds <= 0) return 'duration must be positive';
  if (p.ramp_to_rps !== undefined && (!Number.isFinite(p.ramp_to_rps) || p.ramp_to_rps < 0)) return 'ramp_to_rps must be a number ≥ 0';
  if (p.pattern === 'ramp' && p.ramp_to_rps === undefined) return 'the ramp pattern needs ramp_to_rps (--ramp-to)';
  if (p.stages !== undefined) {
    if (p.pattern !== 'step') return 'stages are only used by the step pattern';
    if (!Array.isArray(p.stages) || p.stages.length === 0) return 'stages must be a non-empty list';
    if (p.stages.length > MAX_STAGES) return `at most ${MAX_STAGES} stages`;
    for (const [i, s] of p.stages.entries()) {
      if (!s || !Number.isFinite(s.duration_seconds) || s.duration_seconds <= 0) return `stages[${i}].duration_seconds must be positive`;
      if (!Number.isFinite(s.rps) || s.rps < 0) return `stages[${i}].rps must be a number ≥ 0`;
    }
  } else if (p.pattern === 'step' && p.ramp_to_rps === undefined) {
    return 'the step pattern needs stages (--stages 10s:100,10s:500) or ramp_to_rps (--ramp-to)';
  }
  if (peakRate(p) <= 0) return 'the pattern never sends a request (its rate is 0 throughout)';
  return null;
}

const smoothstep = (x: number) => (x <= 0 ? 0 : x >= 1 ? 1 : x * x * (3 - 2 * x));

/** Target rate (req/s) at `t` seconds. */
export function rateAt(p: PatternSpec, t: number): number {
  const D = p.duration_seconds;
  if (t < 0 || t >= D) return 0;
  const r = p.rps;
  switch (p.pattern) {
    case 'constant':
    case 'poisson':
      return r;
    case 'ramp':
      return r + ((p.ramp_to_rps ?? r) - r) * (t / D);
    case 'step': {
      const stages = p.stages ?? defaultSteps(p);
      return stageAt(stages, t * 1000)?.rps ?? stages[stages.length - 1].rps;
    }
    case 'spike': {
      const peak = p.ramp_to_rps ?? r * 5;
      return t >= 0.4 * D && t < 0.5 * D ? peak : r;
    }
    case 'wave': {
      const hi = p.ramp_to_rps ?? r * 2;
      const period = D / 3;
      return r + (hi - r) * (1 - Math.cos((2 * Math.PI * t) / period)) / 2;
    }
    case 'gradual':
      return r * smoothstep(t / (0.3 * D));
  }
}

/** The step stage holding `tMs`: its rate and where it ends, or null past the last. */
function stageAt(stages: Stage[], tMs: number): { rps: number; endMs: number } | null {
  let end = 0;
  for (const s of stages) {
    end += s.duration_seconds * 1000;
    if (tMs < end) return { rps: s.rps, endMs: end };
  }
  return null;
}

/** Where the step stage holding `tMs` ends, when its rate is 0 (else `tMs`): only step patterns have silent stretches. */
function silentUntilMs(p: PatternSpec, tMs: number): number {
  if (p.pattern !== 'step') return tMs;
  const s = stageAt(p.stages ?? defaultSteps(p), tMs);
  return s !== null && s.rps === 0 ? s.endMs : tMs;
}

function defaultSteps(p: PatternSpec): Stage[] {
  const to = p.ramp_to_rps ?? p.rps;
  const n = 4;
  return Array.from({ length: n }, (_, i) => ({ duration_seconds: p.duration_seconds / n, rps: p.rps + ((to - p.rps) * i) / (n - 1) }));
}

/** The highest target rate the pattern reaches (for limits and connection sizing). */
export function peakRate(p: PatternSpec): number {
  switch (p.pattern) {
    case 'constant':
    case 'poisson':
    case 'gradual':
      return p.rps;
    case 'ramp':
      return Math.max(p.rps, p.ramp_to_rps ?? p.rps);
    case 'step': {
      // only stages that begin within the run count (one past the end never sends: counting it
      // let a 1 req/s run reserve a 10,000 req/s share of the platform's workload budget)
      let peak = 0;
      let begins = 0;
      for (const s of p.stages ?? defaultSteps(p)) {
        if (begins >= p.duration_seconds) break;
        if (s.rps > peak) peak = s.rps;
        begins += s.duration_seconds;
      }
      return peak;
    }
    case 'spike':
      return Math.max(p.rps, p.ramp_to_rps ?? p.rps * 5);
    case 'wave':
      return Math.max(p.rps, p.ramp_to_rps ?? p.rps * 2);
  }
}

/** Mean target rate over [from, to) seconds (for the per-second series). */
export function meanRate(p: PatternSpec, from: number, to: number): number {
  const n = 50;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += rateAt(p, from + ((i + 0.5) * (to - from)) / n);
  return sum / n;
}

/** Expected number of requests over the whole run. */
export function expectedRequests(p: PatternSpec): number {
  let sum = 0;
  const secs = Math.ceil(p.duration_seconds);
  for (let s = 0; s < secs; s++) sum += meanRate(p, s, Math.min(s + 1, p.duration_seconds)) * (Math.min(s + 1, p.duration_seconds) - s);
  return sum;
}

/** Intended start times, in milliseconds from the start of the run, in order. */
export interface Schedule {
  /** the next start time, or Infinity when the run has no more requests */
  next(): number;
}

/** Integration step of the deterministic schedule (ms). */
const STEP_MS = 1;

export function createSchedule(p: PatternSpec, random: () => number = Math.random): Schedule {
  const endMs = p.duration_seconds * 1000;
  if (p.pattern === 'poisson') {
    let t = 0;
    let first = true;
    const perMs = p.rps / 1000;
    return {
      next() {
        if (first) first = false;
        else t += -Math.log(1 - random()) / perMs;
        return t < endMs ? t : Infinity;
      },
    };
  }
  // Deterministic: request i is due where the integrated rate reaches i.
  let i = 0;
  let t = 0; // integrated up to here (ms)
  let cum = 0; // expected requests in [0, t)
  return {
    next() {
      for (;;) {
        if (t >= endMs) return Infinity;
        const step = Math.min(STEP_MS, endMs - t);
        const perMs = rateAt(p, (t + step / 2) / 1000) / 1000;
        if (perMs === 0) {
          // a silent stage is crossed at once, not a millisecond at a time (an hour of rate 0
          // was 3.6 million steps, in the worker that must also hear `stop`)
          const until = silentUntilMs(p, t);
          if (until > t + step) {
            t = Math.min(until, endMs);
            continue;
          }
        }
        const add = perMs * step;
        if (perMs > 0 && i <= cum + add) {
          const at = t + Math.max(0, i - cum) / perMs;
          i++;
          return at < endMs - 1e-6 ? at : Infinity;
        }
        cum += add;
        t += step;
      }
    },
  };
}
