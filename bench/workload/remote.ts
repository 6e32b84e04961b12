/**
 * `berth load --remote`: the same run, executed by the control plane (`POST /api/workloads`) on the
 * machine the apps run on, followed live over `/api/workloads/:id/live`. Talks to the API through
 * the shared CLI client (API URL and token from --api / BERTH_API / BERTH_TOKEN / `berth login`).
 */
import { BerthClient, ClientError } from '../../shared/client/client.js';
import { readSse } from '../../shared/client/sse.js';
import type { Progress, WorkloadOptions } from './engine.js';
import type { WorkloadMetrics } from './metrics.js';

export interface RemoteRun {
  id: number;
  status: string;
  status_reason: string | null;
  config: Record<string, unknown>;
  metrics: WorkloadMetrics | null;
  api: string;
}

export async function runRemote(o: {
  options: WorkloadOptions;
  api?: string;
  onStart?: (id: number, api: string) => void;
  onProgress?: (p: Progress) => void;
  /** set when the user interrupts: the run is stopped on the control plane */
  stopSignal: AbortSignal;
  wantReport: boolean;
}): Promise<RemoteRun & { report?: string }> {
  const client = await BerthClient.resolve({ api: o.api });
  try {
    const w = o.options;
    const body = {
      app_hostnames: w.app_hostnames, pattern: w.pattern, rps: w.rps, duration_seconds: w.duration_seconds,
      ...(w.ramp_to_rps !== undefined ? { ramp_to_rps: w.ramp_to_rps } : {}),
      ...(w.stages !== undefined ? { stages: w.stages } : {}),
      path: w.path ?? '/', method: w.method ?? 'GET',
      ...(w.headers && Object.keys(w.headers).length ? { headers: w.headers } : {}),
      ...(w.body !== undefined ? { body: Buffer.isBuffer(w.body) ? w.body.toString('utf8') : w.body } : {}),
      ...(w.connections !== undefined ? { connections: w.connections } : {}),
      ...(w.timeout_ms !== undefined ? { timeout_ms: w.timeout_ms } : {}),
    };
    const started = await client.post<{ id: number }>('/api/workloads', body);
    const id = started.id;
    o.onStart?.(id, client.api);
    const live = new AbortController();
    const stop = () => {
      client.post(`/api/workloads/${id}/stop`).catch(() => { /* already over */ }).finally(() => live.abort());
    };
    o.stopSignal.addEventListener('abort', stop, { once: true });
    try {
      const s = await client.stream('GET', `/api/workloads/${id}/live`, { signal: live.signal, headers: { accept: 'text/event-stream' } });
      for await (const ev of readSse(s.body)) {
        if (ev.event === 'progress') {
          // (a progress line berth cannot read is skipped: the final metrics are checked below)
          let p: unknown;
          try { p = JSON.parse(ev.data); } catch { continue; }
          if (progressReadable(p)) o.onProgress?.(p);
        }
        else if (ev.event === 'end') break;
      }
    } catch (e) {
      if ((e as Error).name !== 'AbortError' && !live.signal.aborted) throw e;
    } finally {
      o.stopSignal.removeEventListener('abort', stop);
    }
    // the end event comes once the run's final metrics are stored
    let run = await client.get<RemoteRun>(`/api/workloads/${id}`);
    for (let i = 0; run.status === 'running' && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 100));
      run = await client.get<RemoteRun>(`/api/workloads/${id}`);
    }
    // what is printed from them must be numbers: a server's wrong types are a clear error, not a TypeError
    const bad = run.metrics ? unreadable(run.metrics) : null;
    if (bad !== null) throw new ClientError(`the control plane at ${client.api} sent workload metrics berth cannot read (${bad})`);
    let report: string | undefined;
    if (o.wantReport && run.metrics) report = await client.readAll((await client.stream('GET', `/api/workloads/${id}/report`, { headers: { accept: 'text/html' } })).body, 'GET', `/api/workloads/${id}/report`);
    return { ...run, api: client.api, report };
  } finally {
    await client.close();
  }
}

const NUMBERS = ['total_requests', 'successful_requests', 'failed_requests', 'error_rate', 'requests_per_second', 'target_rps', 'late_requests',
  'dropped_requests', 'duration_seconds', 'scheduled_requests', 'connections_opened', 'connections_max', 'late_threshold_ms'] as const;
const NULLABLE = ['avg_latency_ms', 'min_latency_ms', 'max_latency_ms', 'p50_latency_ms', 'p90_latency_ms', 'p95_latency_ms', 'p99_latency_ms',
  'p999_latency_ms', 'send_delay_p50_ms', 'send_delay_p99_ms', 'send_delay_max_ms'] as const;
const finite = (x: unknown) => typeof x === 'number' && Number.isFinite(x);

/** The first field of a server's metrics that is not what berth prints it as, or null. */
function unreadable(m: WorkloadMetrics): string | null {
  const r = m as unknown as Record<string, unknown>;
  for (const k of NUMBERS) if (!finite(r[k])) return k;
  for (const k of NULLABLE) if (r[k] !== null && r[k] !== undefined && !finite(r[k])) return k;
  for (const k of ['status_code_distribution', 'errors'] as const) {
    const o = r[k];
    if (typeof o !== 'object' || o === null || Array.isArray(o) || !Object.values(o).every(finite)) return k;
  }
  return null;
}

function progressReadable(p: unknown): p is Progress {
  if (typeof p !== 'object' || p === null) return false;
  const r = p as Record<string, unknown>;
  const point = r.point as Record<string, unknown> | undefined;
  return typeof point === 'object' && point !== null && finite(point.target_rps) && finite(point.achieved_rps)
    && ['elapsed_s', 'duration_s', 'errors', 'connections', 'total_requests'].every((k) => finite(r[k]))
    && ['p50_ms', 'p99_ms'].every((k) => r[k] === null || finite(r[k]))
    && ['late', 'dropped'].every((k) => r[k] === undefined || finite(r[k]));
}