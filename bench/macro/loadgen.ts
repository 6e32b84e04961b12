/**
 * One interface over two load generators: wrk (preferred: one C thread can push far more
 * than any proxy here) and autocannon (npm fallback; it saturates near 25k req/s on one
 * core, so ratios against fast targets are capped by the tool, not the target).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { spawnTracked, which } from '../lib/proc.js';

export type LoadgenKind = 'wrk' | 'autocannon';

export interface LoadResult {
  tool: LoadgenKind;
  requests: number;
  durationS: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** socket errors + timeouts + non-2xx/3xx responses */
  errors: number;
  errorDetail: string;
}

export interface LoadOpts {
  port: number;
  path: string;
  host: string;
  connections: number;
  durationS: number;
  cpu?: string;
  workDir: string;
  /** a JSON request body: the requests are POSTs carrying it (Content-Type: application/json) */
  body?: string;
}

export function chooseLoadgen(): { kind: LoadgenKind; reason: string } {
  const forced = process.env.BENCH_LOADGEN;
  if (forced === 'autocannon') return { kind: 'autocannon', reason: 'BENCH_LOADGEN=autocannon' };
  if (forced === 'wrk') {
    if (!which('wrk')) throw new Error('BENCH_LOADGEN=wrk but wrk is not installed (apt-get install -y wrk)');
    return { kind: 'wrk', reason: 'BENCH_LOADGEN=wrk' };
  }
  if (which('wrk')) return { kind: 'wrk', reason: 'wrk found' };
  return { kind: 'autocannon', reason: 'wrk not installed (apt-get install -y wrk); autocannon saturates near 25k req/s on one core' };
}

const WRK_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d,\\"p50_us\\":%.1f,\\"p99_us\\":%.1f}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`;

/** A Lua string literal of `s`'s UTF-8 bytes: printable ASCII as is (but `"` and `\`), every other byte as `\ddd` (decimal). */
function luaString(s: string): string {
  let out = '"';
  for (const b of Buffer.from(s, 'utf8')) out += b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : `\\${String(b).padStart(3, '0')}`;
  return out + '"';
}

function lastLine(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '';
  }
}

function collect(t: ReturnType<typeof spawnTracked>): Promise<{ code: number | null; out: string }> {
  let out = '';
  t.child.stdout?.setEncoding('utf8');
  t.child.stdout?.on('data', (d: string) => (out += d));
  return t.exited.then((code) => ({ code, out }));
}

async function runWrk(o: LoadOpts): Promise<LoadResult> {
  const script = join(o.workDir, 'report.lua');
  writeFileSync(script, (o.body === undefined ? '' : `wrk.method = "POST"\nwrk.body = ${luaString(o.body)}\nwrk.headers["Content-Type"] = "application/json"\n`) + WRK_LUA);
  const url = `http://127.0.0.1:${o.port}${o.path}`;
  const errFile = join(o.workDir, 'wrk.err');
  writeFileSync(errFile, '');
  const t = spawnTracked(
    'wrk',
    ['-t1', `-c${o.connections}`, `-d${o.durationS}s`, '--timeout', '5s', '-H', `Host: ${o.host}`, '-s', script, url],
    { name: 'wrk', cpu: o.cpu, captureStdout: true, logFile: errFile },
  );
  const { code, out } = await collect(t);
  const line = out.split('\n').find((l) => l.startsWith('BENCHJSON '));
  if (!line) throw new Error(`wrk exited ${code} without a report: ${lastLine(errFile)} ${out.slice(-300)}`.trim());
  const j = JSON.parse(line.slice('BENCHJSON '.length)) as Record<string, number>;
  const durationS = j.duration_us / 1e6;
  const errors = j.connect + j.read + j.write + j.status + j.timeout;
  const parts = (['connect', 'read', 'write', 'status', 'timeout'] as const).filter((k) => j[k] > 0).map((k) => `${k}=${j[k]}`);
  return {
    tool: 'wrk',
    requests: j.requests,
    durationS,
    rps: j.requests / durationS,
    p50Ms: j.p50_us / 1000,
    p99Ms: j.p99_us / 1000,
    errors,
    errorDetail: parts.join(' '),
  };
}

async function runAutocannon(o: LoadOpts): Promise<LoadResult> {
  const require = createRequire(import.meta.url);
  const bin = join(require.resolve('autocannon/package.json'), '..', 'autocannon.js');
  const url = `http://127.0.0.1:${o.port}${o.path}`;
  const errFile = join(o.workDir, 'autocannon.err');
  writeFileSync(errFile, '');
  const t = spawnTracked(
    process.execPath,
    [bin, '-c', String(o.connections), '-d', String(o.durationS), '-j', '-H', `host=${o.host}`,
      ...(o.body === undefined ? [] : ['-m', 'POST', '-b', o.body, '-H', 'content-type=application/json']), url],
    { name: 'autocannon', cpu: o.cpu, captureStdout: true, logFile: errFile },
  );
  const { code, out } = await collect(t);
  const start = out.indexOf('{');
  if (start === -1) throw new Error(`autocannon exited ${code} without a report: ${lastLine(errFile)} ${out.slice(-300)}`.trim());
  const j = JSON.parse(out.slice(start)) as {
    requests: { total: number };
    latency: { p50: number; p99: number };
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
  };
  const durationS = j.duration;
  const parts = [j.errors ? `socket=${j.errors}` : '', j.timeouts ? `timeout=${j.timeouts}` : '', j.non2xx ? `non2xx=${j.non2xx}` : ''].filter(Boolean);
  return {
    tool: 'autocannon',
    requests: j.requests.total,
    durationS,
    rps: j.requests.total / durationS,
    p50Ms: j.latency.p50,
    p99Ms: j.latency.p99,
    errors: j.errors + j.timeouts + j.non2xx,
    errorDetail: parts.join(' '),
  };
}

export function runLoad(kind: LoadgenKind, o: LoadOpts): Promise<LoadResult> {
  return kind === 'wrk' ? runWrk(o) : runAutocannon(o);
}
