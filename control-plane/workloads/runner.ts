/**
 * Runs in flight: one worker thread each (worker.ts), their live state (series and latest totals),
 * and who listens for their progress. Persistence is the plugin's business: the runner calls
 * `onCheckpoint` every few seconds and `onEnd` once.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Progress, WorkloadOptions } from '../../bench/workload/engine.js';
import type { SeriesPoint, WorkloadMetrics } from '../../bench/workload/metrics.js';

export type RunEnd = { status: 'completed' | 'stopped' | 'failed'; reason: string | null; metrics: WorkloadMetrics | null };
export type LiveEvent = { type: 'progress'; progress: Progress; metrics: WorkloadMetrics } | { type: 'end'; status: string; reason: string | null };

export interface LiveRun {
  id: number;
  userId: number;
  /** the app hostnames it sends to (checked again at every heartbeat: still its owner's?) */
  hosts: string[];
  /** the highest rate its pattern reaches (the control plane's total is capped: config maxRpsTotal) */
  peak: number;
  series: SeriesPoint[];
  latest: WorkloadMetrics | null;
  stopRequested: boolean;
  /** it has ended (its end may still be being stored) */
  settled: boolean;
  /** why it is being stopped, when not by its owner (shutdown, its app deleted) */
  stopReason: string | null;
  /** how a run stopped for stopReason ends */
  stopAs: 'failed' | 'stopped';
  listeners: Set<(e: LiveEvent) => void>;
  ended: Promise<RunEnd>;
  worker: Worker;
}

/** Seconds between metric writes while a run is going. */
export const CHECKPOINT_EVERY_S = 5;

/** The compiled worker: next to this module in dist/, or dist/ of the checkout when running from sources (tests). */
function workerUrl(): URL {
  const here = new URL('./worker.js', import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  const root = fileURLToPath(new URL('../../', import.meta.url));
  return pathToFileURL(join(root, 'dist', 'control-plane', 'workloads', 'worker.js'));
}

export class WorkloadRunner {
  private readonly runs = new Map<number, LiveRun>();

  constructor(private readonly hooks: {
    onCheckpoint(id: number, metrics: WorkloadMetrics): void;
    onEnd(id: number, end: RunEnd): Promise<void>;
  }) {}

  get size(): number {
    return this.runs.size;
  }

  /** The ids of the runs going now. */
  ids(): number[] {
    return [...this.runs.keys()];
  }

  get(id: number): LiveRun | undefined {
    return this.runs.get(id);
  }

  /** The live metrics of a run with the whole series so far. */
  metrics(r: LiveRun): WorkloadMetrics | null {
    return r.latest === null ? null : { ...r.latest, series: r.series };
  }

  /** The peaks of the runs going now, added up. */
  get peakTotal(): number {
    let n = 0;
    for (const r of this.runs.values()) n += r.peak;
    return n;
  }

  /** The peaks of one user's runs going now, added up. */
  peakOf(userId: number): number {
    let n = 0;
    for (const r of this.runs.values()) if (r.userId === userId) n += r.peak;
    return n;
  }

  start(id: number, userId: number, options: WorkloadOptions, peak = 0): LiveRun {
    const url = workerUrl();
    if (!existsSync(fileURLToPath(url))) throw new Error(`the workload worker is not built (${fileURLToPath(url)}); run npm run build`);
    const worker = new Worker(url, { workerData: { options }, resourceLimits: { maxOldGenerationSizeMb: 256 } });
    let resolveEnd!: (e: RunEnd) => void;
    const run: LiveRun = {
      id, userId, hosts: options.app_hostnames ?? options.hosts ?? [], peak, series: [], latest: null, stopRequested: false, settled: false, stopReason: null, stopAs: 'failed', listeners: new Set(), worker,
      ended: new Promise<RunEnd>((r) => { resolveEnd = r; }),
    };
    this.runs.set(id, run);
    const end = (e: RunEnd) => {
      if (run.settled) return;
      run.settled = true;
      this.hooks.onEnd(id, e).finally(() => {
        // its answer is in: the thread goes (one left running, by a timer or a port, is uncounted)
        void worker.terminate();
        this.runs.delete(id);
        for (const l of run.listeners) l({ type: 'end', status: e.status, reason: e.reason });
        run.listeners.clear();
        resolveEnd(e);
      });
    };
    worker.on('message', (m: { type: string; progress?: Progress; metrics?: WorkloadMetrics; message?: string }) => {
      if (m.type === 'progress' && m.progress && m.metrics) {
        run.series.push(m.progress.point);
        run.latest = m.metrics;
        const full = { ...m.metrics, series: run.series };
        if (m.progress.point.t % CHECKPOINT_EVERY_S === CHECKPOINT_EVERY_S - 1) this.hooks.onCheckpoint(id, full);
        for (const l of run.listeners) l({ type: 'progress', progress: m.progress, metrics: m.metrics });
      } else if (m.type === 'done' && m.metrics) {
        run.latest = m.metrics;
        const status = run.stopReason !== null ? run.stopAs : run.stopRequested || m.metrics.stopped ? 'stopped' : 'completed';
        end({ status, reason: run.stopReason, metrics: m.metrics });
      } else if (m.type === 'error') {
        end({ status: 'failed', reason: `the run failed: ${m.message}`, metrics: this.metrics(run) });
      }
    });
    worker.on('error', (e) => end({ status: 'failed', reason: `the run's worker crashed: ${e.message}`, metrics: this.metrics(run) }));
    worker.on('exit', (code) => end({ status: 'failed', reason: `the run's worker exited (code ${code}) before finishing`, metrics: this.metrics(run) }));
    return run;
  }

  /** Ask a run to stop (its in-flight requests get ~2 s); the worker is terminated if it does not answer. */
  stop(r: LiveRun, reason: string | null = null, as: 'failed' | 'stopped' = 'failed'): Promise<RunEnd> {
    if (!r.stopRequested) {
      r.stopRequested = true;
      r.stopReason = reason;
      r.stopAs = as;
      r.worker.postMessage({ type: 'stop' });
      const kill = setTimeout(() => { void r.worker.terminate(); }, 5000);
      kill.unref();
      void r.ended.then(() => clearTimeout(kill));
    }
    return r.ended;
  }

  /** Stop every run (shutdown): each ends `failed` with `reason`, its metrics so far kept. */
  async stopAll(reason: string): Promise<void> {
    await Promise.all([...this.runs.values()].map((r) => this.stop(r, reason)));
  }
}
