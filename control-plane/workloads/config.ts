import { UsageError } from '../../shared/cli/args.js';
import { envNumber } from '../env.js';

/** Seconds between the heartbeats of a control plane's running workloads (and its looks for stale ones). */
export const HEARTBEAT_S = 5;

/** The workload generator's settings (`ControlPlaneOptions.workloads`, env BERTH_WORKLOAD_*). */
export interface WorkloadConfig {
  /** the berth proxy runs send their load through (`berth up` sets it to its own proxy) */
  proxyUrl: string;
  /** runs one user may have running at once (429 past it) */
  maxRunningPerUser: number;
  /** runs running at once on this control plane, all users (429 past it) */
  maxRunningTotal: number;
  /** highest target rate a run may reach (400 past it; the API's own bound is 50,000) */
  maxRps: number;
  /**
   * the peaks of the runs going at once, added up (429 past it): what all runs together may send
   * through the shared proxy, whoever starts them (default: maxRps)
   */
  maxRpsTotal: number;
  /**
   * the peaks of one user's runs going at once on this control plane, added up (a run past it
   * alone: 400; with the user's others: 429): so that one tenant never holds the whole of
   * maxRpsTotal for an hour (default: half of it, at most the total). It caps a single run too:
   * with the defaults a run may peak at 5,000 req/s, not maxRps's 10,000
   */
  maxRpsPerUser: number;
  /** longest run (400 past it; the API's own bound is 3,600 s) */
  maxDurationSeconds: number;
  /**
   * ms between the heartbeats of this control plane's runs, and its looks for runs to end (another
   * control plane's gone quiet, an app deleted): 5,000 unless given in code (tests); runs without
   * a heartbeat for 30 s are failed, so at most 5,000
   */
  heartbeatMs: number;
}

function given(v: number | undefined, what: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < min || v > max) throw new UsageError(`workloads.${what} (${v}) must be a whole number between ${min} and ${max}`);
  return v;
}

export function workloadConfig(o: Partial<WorkloadConfig> | undefined): WorkloadConfig {
  const proxyUrl = o?.proxyUrl || process.env.BERTH_PROXY_URL || 'http://127.0.0.1:8080';
  let u: URL;
  try {
    u = new URL(proxyUrl);
  } catch {
    throw new UsageError(`proxy URL "${proxyUrl}" is not a URL (expected http://host:port)`);
  }
  if (u.protocol !== 'http:') throw new UsageError(`proxy URL "${proxyUrl}" must be http://`);
  const c = {
    proxyUrl: `${u.protocol}//${u.host}`,
    maxRunningPerUser: given(o?.maxRunningPerUser, 'maxRunningPerUser', 1, 100) ?? envNumber('BERTH_WORKLOAD_MAX_RUNNING', 1, 1, 100, true),
    maxRunningTotal: given(o?.maxRunningTotal, 'maxRunningTotal', 1, 100) ?? envNumber('BERTH_WORKLOAD_MAX_RUNNING_TOTAL', 4, 1, 100, true),
    maxRps: given(o?.maxRps, 'maxRps', 1, 50_000) ?? envNumber('BERTH_WORKLOAD_MAX_RPS', 10_000, 1, 50_000, true),
    maxRpsTotal: given(o?.maxRpsTotal, 'maxRpsTotal', 1, 1_000_000) ?? envNumber('BERTH_WORKLOAD_MAX_RPS_TOTAL', 0, 0, 1_000_000, true),
    maxRpsPerUser: given(o?.maxRpsPerUser, 'maxRpsPerUser', 1, 1_000_000) ?? envNumber('BERTH_WORKLOAD_MAX_RPS_PER_USER', 0, 0, 1_000_000, true),
    maxDurationSeconds: given(o?.maxDurationSeconds, 'maxDurationSeconds', 1, 3600) ?? envNumber('BERTH_WORKLOAD_MAX_DURATION_S', 3600, 1, 3600, true),
    heartbeatMs: given(o?.heartbeatMs, 'heartbeatMs', 100, 5000) ?? HEARTBEAT_S * 1000,
  };
  // unset (0): as much as one run may send
  const maxRpsTotal = c.maxRpsTotal || c.maxRps;
  // unset (0): half the total (all of a total of 1); never more than the total
  const maxRpsPerUser = Math.min(c.maxRpsPerUser || Math.max(1, Math.floor(maxRpsTotal / 2)), maxRpsTotal);
  return { ...c, maxRpsTotal, maxRpsPerUser };
}
