// The proxy's worker thread (built) with a way to crash it: `{ type: 'crash' }` throws from the
// thread's event loop, as a bug nothing caught would (test/proxy/worker-restart.test.ts).
import { parentPort } from 'node:worker_threads';

await import(new URL('../../dist/proxy/workers/worker.js', import.meta.url).href);
parentPort.on('message', (m) => {
  if (m.type === 'crash') setImmediate(() => { throw new Error('a bug nothing caught (test)'); });
});
