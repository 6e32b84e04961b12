import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '../../shared/logging.js';
import { DataPlane } from '../server/data-plane.js';
import { runtime } from '../server/state.js';
import { setChallenge } from '../server/acme-challenge.js';
import type { TlsConfig } from '../server/tls.js';
import type { WorkerInit } from './pool.js';

const init = workerData as WorkerInit & { index: number };
const logger = createLogger('berth-proxy', init.logLevel ? { level: init.logLevel } : {}).child({ worker: init.index });
const plane = new DataPlane({ logger, accessLogRate: init.accessLogRate, upstreamConnections: init.upstreamConnections, ownNames: init.ownNames });
const port = parentPort!;
// held requests of a scaled-to-zero route: the main thread owns the control-plane connection
if (init.canActivate) runtime.activate = (route: string) => port.postMessage({ type: 'activate', route });

/**
 * The last resort for a bug nothing caught (a timer's, a socket event's): the listeners and every
 * client connection close at once, the main thread is told why, and the thread exits for the
 * pool to start another in its place. Exiting with uWS sockets open would abort the whole
 * process (Node closes a worker's loop and finds uWS's handles on it), so they close first.
 */
let dying = false;
process.on('uncaughtException', (e) => {
  if (dying) return;
  dying = true;
  const exit = () => process.exit(70);
  try {
    // what it counted goes with it: metering since the last drain, and its counters (the pool
    // keeps adding them to its successor's, so /metrics' sums do not fall back)
    port.postMessage({ type: 'fatal', error: describe(e), entries: tryOr(() => plane.drainMeters(), []), stats: tryOr(() => plane.snapshot(), undefined) });
  } catch { /* the close below matters more */ }
  try {
    plane.close(0).then(exit, exit);
  } catch {
    exit();
  }
  // (a close that hangs on a broken thread: the sockets are closed by then, out it goes)
  setTimeout(exit, 2000).unref();
});

function describe(e: unknown): string {
  try {
    return e instanceof Error ? (e.stack ?? e.message) : String(e);
  } catch {
    return 'an exception that cannot be shown as text';
  }
}

function tryOr<T>(f: () => T, fallback: T): T {
  try {
    return f();
  } catch {
    return fallback;
  }
}

(async () => {
  // a worker started in a dead one's place serves the table before it takes a connection
  if (init.table) plane.apply(init.table);
  for (const [token, answer] of init.challenges ?? []) setChallenge(token, answer);
  const p = await plane.listen(init.host, init.port);
  const tlsPort = init.tls ? await plane.listenTls(init.tls.host, init.tls.port, init.tls.config, init.tls.redirect) : undefined;
  return { p, tlsPort };
})().then(
  ({ p, tlsPort }) => port.postMessage({ type: 'listening', port: p, tlsPort }),
  // (a listener that did open closes first: the pool ends this thread, which must hold no uWS socket then)
  (e: Error) => plane.close(0).catch(() => {}).then(() => port.postMessage({ type: 'error', message: e.message })),
);

port.on('message', (m: { type: string; seq: number; spec?: never; deltas?: never }) => {
  if (m.type === 'apply' || m.type === 'apply-deltas') {
    try {
      const r = m.type === 'apply' ? plane.apply(m.spec!) : plane.applyDeltas(m.deltas!);
      port.postMessage({ type: 'applied', seq: m.seq, ...r });
    } catch (e) {
      port.postMessage({ type: 'applied', seq: m.seq, version: 0, routes: 0, ms: 0, error: (e as Error).message });
    }
  } else if (m.type === 'report-counts') {
    const counts = plane.reportCounts();
    port.postMessage({ type: 'report-counts', seq: m.seq, counts }, [counts.counts.buffer as ArrayBuffer]);
  } else if (m.type === 'stats') {
    port.postMessage({ type: 'stats', seq: m.seq, stats: plane.snapshot() });
  } else if (m.type === 'meters') {
    port.postMessage({ type: 'meters', seq: m.seq, entries: plane.drainMeters() });
  } else if (m.type === 'tls') {
    plane.reloadTls((m as unknown as { config: TlsConfig }).config).then(
      () => port.postMessage({ type: 'tls-reloaded', seq: m.seq }),
      (e: Error) => port.postMessage({ type: 'tls-reloaded', seq: m.seq, error: e.message }),
    );
  } else if (m.type === 'acme') {
    const c = m as unknown as { token: string; answer: string | null };
    setChallenge(c.token, c.answer);
    port.postMessage({ type: 'acme-set', seq: m.seq });
  } else if (m.type === 'wake-refused') {
    plane.refuseWake((m as unknown as { route: string }).route);
  } else if (m.type === 'close') {
    // the last metering counts (requests that finished while draining) go to the main thread
    void plane.close().then(() => port.postMessage({ type: 'closed', entries: plane.drainMeters() }));
  }
});
