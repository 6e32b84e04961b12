/**
 * A workload run in its own worker thread, so the load never shares the API's event loop.
 * In: workerData `{ options }` (WorkloadOptions) and `{type:'stop'}` messages.
 * Out: `{type:'progress', progress, metrics}` once per second (metrics without the series: the
 * parent keeps the series from the progress points), then `{type:'done', metrics}` or
 * `{type:'error', message}`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { WorkloadRun, type WorkloadOptions } from '../../bench/workload/engine.js';

const port = parentPort!;
const data = workerData as { options: WorkloadOptions };
try {
  const o = data.options;
  const run = new WorkloadRun({ ...o, body: o.body !== undefined ? Buffer.from(o.body as Uint8Array | string) : undefined });
  run.onProgress = (progress) => {
    const { series: _s, ...metrics } = run.snapshot();
    port.postMessage({ type: 'progress', progress, metrics });
  };
  port.on('message', (m: { type: string }) => { if (m.type === 'stop') run.stop(); });
  run.start().then(
    (metrics) => { port.postMessage({ type: 'done', metrics }); port.close(); },
    (e: Error) => port.postMessage({ type: 'error', message: e.message }),
  );
} catch (e) {
  port.postMessage({ type: 'error', message: (e as Error).message });
}
