/**
 * Fallback upstream when nginx is not installed: a bare uWebSockets.js server (never
 * node:http — the upstream must be much faster than any proxy under test).
 * Usage: node uws-upstream.js PORT [PORT...]   GET /64k → 64 KiB, anything else (GET or POST /small) → "ok".
 */
import uWS from 'uWebSockets.js';

const small = Buffer.from('ok');
const big = Buffer.alloc(64 * 1024, 'x');
const ports = process.argv.slice(2).map(Number);
if (ports.length === 0) {
  process.stderr.write('usage: uws-upstream PORT [PORT...]\n');
  process.exit(2);
}
const app = uWS.App();
app.get('/64k', (res) => {
  res.cork(() => res.writeHeader('content-type', 'application/octet-stream').end(big));
});
app.any('/*', (res) => {
  res.cork(() => res.writeHeader('content-type', 'text/plain').end(small));
});
let pending = ports.length;
for (const p of ports) {
  app.listen('127.0.0.1', p, (token) => {
    if (!token) {
      process.stderr.write(`uws-upstream: cannot listen on ${p}\n`);
      process.exit(1);
    }
    if (--pending === 0) process.stdout.write(`uws-upstream listening on ${ports.join(',')}\n`);
  });
}
