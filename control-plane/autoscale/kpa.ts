/**
 * Knative's pod autoscaler (KPA), as one pure decision per app and tick.
 *
 * desired = ⌈average concurrency over the stable window ÷ target per instance⌉, clamped to
 * [min_instances, max_instances]. Panic mode starts when the panic-window average reaches
 * `panicThresholdPct` of current capacity: desired then follows the panic window and never goes
 * down, until a whole stable window has passed without panic. Scale-up and scale-down per tick are
 * bounded by rates (×maxScaleUpRate, ÷maxScaleDownRate of the current count). `scale_down_delay_s`
 * keeps the highest desired count of that window. Zero only when min_instances is 0 and no request
 * was seen for the stable window plus the grace period.
 */

export interface KpaConfig {
  stableWindowMs: number;
  /** panic window as a percentage of the stable window */
  panicWindowPct: number;
  /** panic when the panic-window average is this % of current capacity */
  panicThresholdPct: number;
  maxScaleUpRate: number;
  maxScaleDownRate: number;
  scaleToZeroGraceMs: number;
}

export const KPA_DEFAULTS: KpaConfig = {
  stableWindowMs: 60_000,
  panicWindowPct: 10,
  panicThresholdPct: 200,
  maxScaleUpRate: 1000,
  maxScaleDownRate: 2,
  scaleToZeroGraceMs: 30_000,
};

export interface AppSettings {
  minInstances: number;
  maxInstances: number;
  /** 0 = no limit */
  containerConcurrency: number;
  targetUtilization: number;
  scaleDownDelayMs: number;
}

/** One observation: the app's concurrency summed over every proxy, at `at` (ms). */
export interface Sample {
  at: number;
  concurrency: number;
}

/** What the autoscaler remembers about an app between ticks. */
export interface KpaState {
  panicSince: number | null;
  /** the last time a sample showed traffic */
  lastTrafficAt: number;
  /** recent desired counts, for scale_down_delay_s */
  recent: Array<{ at: number; desired: number }>;
}

export function newKpaState(now: number): KpaState {
  return { panicSince: null, lastTrafficAt: now, recent: [] };
}

export interface Decision {
  desired: number;
  panic: boolean;
  reason: string;
  observed: number;
  targetPerInstance: number;
}

/** Concurrency one instance should carry: container_concurrency × target_utilization / 100 (100 when unlimited). */
export function targetPerInstance(s: AppSettings): number {
  if (s.containerConcurrency === 0) return 100;
  return Math.max(0.01, (s.containerConcurrency * s.targetUtilization) / 100);
}

function average(samples: Sample[], from: number): number {
  let sum = 0;
  let n = 0;
  for (const x of samples) {
    if (x.at >= from) {
      sum += x.concurrency;
      n++;
    }
  }
  return n === 0 ? 0 : sum / n;
}

/**
 * Decide the app's instance count. `current` is the instances that count as capacity (wanted
 * running); `samples` the observations of at least the last stable window. Mutates `state`.
 */
export function decide(now: number, current: number, samples: Sample[], s: AppSettings, state: KpaState, c: KpaConfig = KPA_DEFAULTS): Decision {
  const target = targetPerInstance(s);
  const panicWindowMs = Math.max(1, (c.stableWindowMs * c.panicWindowPct) / 100);
  const stable = average(samples, now - c.stableWindowMs);
  const panicAvg = average(samples, now - panicWindowMs);
  for (const x of samples) if (x.concurrency > 0 && x.at > state.lastTrafficAt) state.lastTrafficAt = x.at;

  let desired = Math.ceil(stable / target);
  let reason = `stable window average ${round(stable)} / ${round(target)} per instance`;
  const panicDesired = Math.ceil(panicAvg / target);

  // panic: a burst beyond what current capacity can take
  const capacity = Math.max(current, 1) * target;
  if (panicAvg / capacity >= c.panicThresholdPct / 100 && panicDesired > current) {
    if (state.panicSince === null) state.panicSince = now;
  } else if (state.panicSince !== null && now - state.panicSince >= c.stableWindowMs) {
    state.panicSince = null;
  }
  const panic = state.panicSince !== null;
  if (panic) {
    desired = Math.max(panicDesired, current, desired);
    reason = `panic: panic window average ${round(panicAvg)} is ${Math.round((panicAvg / capacity) * 100)}% of capacity`;
  }

  // rate limits (Knative: up to ×1000, down to ÷2 per decision)
  const maxUp = Math.max(1, Math.ceil(current * c.maxScaleUpRate));
  const minDown = Math.floor(current / c.maxScaleDownRate);
  if (desired > maxUp) desired = maxUp;
  if (desired < minDown) desired = minDown;

  // scale_down_delay_s: hold the highest recent count
  state.recent.push({ at: now, desired });
  while (state.recent.length > 0 && state.recent[0].at < now - s.scaleDownDelayMs) state.recent.shift();
  if (s.scaleDownDelayMs > 0) {
    const held = Math.max(...state.recent.map((r) => r.desired));
    if (held > desired) {
      desired = held;
      reason += `; scale-down delay holds ${held}`;
    }
  }

  // zero only after a quiet stable window plus the grace period
  if (desired === 0 && s.minInstances === 0 && current > 0 && now - state.lastTrafficAt < c.stableWindowMs + c.scaleToZeroGraceMs) {
    desired = 1;
    reason = 'idle, waiting for the scale-to-zero grace period';
  } else if (desired === 0 && s.minInstances === 0 && current > 0) {
    reason = 'no traffic for the stable window and grace period: scale to zero';
  }

  const clamped = Math.min(Math.max(desired, s.minInstances), s.maxInstances);
  if (clamped !== desired) reason += `; clamped to [${s.minInstances}, ${s.maxInstances}]`;
  return { desired: clamped, panic, reason, observed: round(stable), targetPerInstance: round(target) };
}

const round = (n: number) => Math.round(n * 100) / 100;
