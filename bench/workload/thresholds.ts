/**
 * `--fail-on "p99>200ms,error_rate>1%"`: conditions on the final metrics that make `berth load`
 * exit 1 (for CI). Each condition is `metric op value[unit]`, op one of > >= < <=; a condition that
 * holds is a failure.
 *
 * Metrics: p50 p90 p95 p99 p999 avg min max (latency, unit us/ms/s, default ms), error_rate (percent,
 * `%` optional), errors / failed, late, dropped, total (counts), rps (achieved req/s),
 * achieved_pct (achieved ÷ target rate, percent).
 */
import type { WorkloadMetrics } from './metrics.js';
import { msText } from './units.js';

export interface Threshold {
  text: string;
  metric: string;
  op: '>' | '>=' | '<' | '<=';
  value: number;
}

const LATENCY: Record<string, keyof WorkloadMetrics> = {
  p50: 'p50_latency_ms', p90: 'p90_latency_ms', p95: 'p95_latency_ms', p99: 'p99_latency_ms', p999: 'p999_latency_ms',
  avg: 'avg_latency_ms', min: 'min_latency_ms', max: 'max_latency_ms',
};
const COUNTS = ['errors', 'failed', 'late', 'dropped', 'total', 'rps', 'error_rate', 'achieved_pct'];

export class ThresholdError extends Error {}

/** A metric's value as `berth load` prints it elsewhere: latencies as its summary does, rates in percent. */
export function shownValue(metric: string, v: number | null): string {
  if (v === null) return 'n/a';
  if (metric in LATENCY) return msText(v);
  const n = Math.round(v * 1000) / 1000;
  return metric === 'error_rate' || metric === 'achieved_pct' ? `${n}%` : metric === 'rps' ? `${n} req/s` : String(n);
}

export function parseThresholds(spec: string): Threshold[] {
  const out: Threshold[] = [];
  for (const raw of spec.split(',')) {
    const text = raw.trim();
    if (!text) continue;
    const m = /^([a-z0-9_]+)\s*(>=|<=|>|<)\s*([0-9]+(?:\.[0-9]+)?)\s*(us|µs|ms|s|%)?$/i.exec(text);
    if (!m) throw new ThresholdError(`"${text}" is not a condition like p99>200ms or error_rate>1%`);
    const metric = m[1].toLowerCase();
    const op = m[2] as Threshold['op'];
    let value = Number(m[3]);
    const unit = (m[4] ?? '').toLowerCase();
    if (metric in LATENCY) {
      if (unit === '%') throw new ThresholdError(`"${text}": ${metric} is a latency (us, ms or s)`);
      value = unit === 's' ? value * 1000 : unit === 'us' || unit === 'µs' ? value / 1000 : value;
    } else if (COUNTS.includes(metric)) {
      if (unit && unit !== '%') throw new ThresholdError(`"${text}": ${metric} takes no time unit`);
      if (unit === '%' && metric !== 'error_rate' && metric !== 'achieved_pct') throw new ThresholdError(`"${text}": ${metric} is not a percentage`);
    } else {
      throw new ThresholdError(`"${text}": unknown metric "${metric}" (p50 p90 p95 p99 p999 avg min max error_rate errors late dropped total rps achieved_pct)`);
    }
    out.push({ text, metric, op, value });
  }
  if (out.length === 0) throw new ThresholdError('--fail-on needs at least one condition');
  return out;
}

/** The metric's value as compared (latencies in ms, rates in percent). */
export function thresholdValue(metric: string, m: WorkloadMetrics): number | null {
  if (metric in LATENCY) return m[LATENCY[metric]] as number | null;
  switch (metric) {
    case 'errors':
    case 'failed':
      return m.failed_requests;
    case 'late':
      return m.late_requests;
    case 'dropped':
      return m.dropped_requests;
    case 'total':
      return m.total_requests;
    case 'rps':
      return m.requests_per_second;
    case 'error_rate':
      return m.error_rate;
    case 'achieved_pct':
      return m.scheduled_requests > 0 ? (100 * (m.total_requests - m.dropped_requests)) / m.scheduled_requests : 0;
  }
  return null;
}

/** The conditions that hold (= failures). A latency condition with no latency measured fails. */
export function failedThresholds(ts: Threshold[], m: WorkloadMetrics): { threshold: Threshold; actual: number | null }[] {
  const failed: { threshold: Threshold; actual: number | null }[] = [];
  for (const t of ts) {
    const v = thresholdValue(t.metric, m);
    const hit = v === null ? true
      : t.op === '>' ? v > t.value : t.op === '>=' ? v >= t.value : t.op === '<' ? v < t.value : v <= t.value;
    if (hit) failed.push({ threshold: t, actual: v });
  }
  return failed;
}
