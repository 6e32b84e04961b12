/**
 * `berth load`: run a workload from the command line against an app behind the local berth proxy
 * (`--app HOST`) or any HTTP/1.1 URL (`--url`), with a live line while it runs, a summary table at
 * the end, optional JSON / HTML reports and `--fail-on` thresholds for CI (exit 1 when one holds).
 */
import { isLoopbackName } from '../../shared/hostname.js';
import { accessSync, constants as fsConstants, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import { UsageError, formatHelp, parseArgs, resolveOptions, type OptionSpec } from '../../shared/cli/args.js';
import { BerthClient, ClientError } from '../../shared/client/client.js';
import { num, printable, terminalSafe } from '../../shared/client/style.js';
import { PRECISE_FROM_RPS, runWorkload, type Progress, type WorkloadOptions } from './engine.js';
import { redactHeaders } from './redact.js';
import { runRemote } from './remote.js';
import { API_MAX_DURATION_S } from '../../control-plane/workloads/schema.js';
import { msText } from './units.js';
import type { WorkloadMetrics } from './metrics.js';
import { PATTERNS, checkPattern, peakRate, type PatternName, type Stage } from './patterns.js';
import { renderReport } from './report.js';
import { MAX_BODY_BYTES, RequestSpecError, prepareRequest } from './request.js';
import { ThresholdError, failedThresholds, parseThresholds, shownValue, type Threshold } from './thresholds.js';

/** Where --app goes when neither --proxy-url nor the control plane says (berth up's default proxy). */
const FALLBACK_PROXY_URL = 'http://127.0.0.1:8080';

const SPECS: OptionSpec[] = [
  { name: 'app', help: 'app hostname: send through the local berth proxy with this Host' },
  { name: 'url', help: 'send to this http:// URL instead (any server)' },
  { name: 'proxy-url', env: 'BERTH_PROXY_URL', help: `the berth proxy --app goes through (default: the one the control plane of --api names, else ${FALLBACK_PROXY_URL})` },
  { name: 'rps', help: 'target rate, requests per second (the base rate of the pattern)' },
  { name: 'duration', default: '30s', help: 'how long: 30s, 2m, 1h30m, 500ms' },
  { name: 'pattern', default: 'constant', help: `${PATTERNS.join(' | ')}` },
  { name: 'ramp-to', help: 'rate the ramp/step pattern ends at (peak of spike and wave)' },
  { name: 'stages', help: 'step pattern stages: 10s:100,20s:500,…' },
  { name: 'connections', help: 'force this many keep-alive connections (default: grow with rate and latency)' },
  { name: 'method', default: 'GET', help: 'HTTP method' },
  { name: 'path', help: 'request path (default: the URL\'s, or /)' },
  { name: 'header', help: 'a request header "Name: value" (repeatable; also -H)' },
  { name: 'body', help: 'request body: text, or @file' },
  { name: 'timeout', default: '10s', help: 'per-request timeout' },
  { name: 'json', help: 'write the metrics as JSON to this file (- for stdout)' },
  { name: 'html', help: 'write a self-contained HTML report to this file' },
  { name: 'fail-on', help: 'exit 1 when a condition holds: "p99>200ms,error_rate>1%" (p50…p999 avg max error_rate errors late dropped rps achieved_pct)' },
  { name: 'precise', boolean: true, help: 'sub-millisecond send timing at any rate (spins: costs a whole core; automatic from 5,000 req/s)' },
  { name: 'remote', boolean: true, help: 'run it on the control plane (POST /api/workloads, your own apps only) and follow it live' },
  { name: 'api', env: 'BERTH_API', help: 'control-plane API for --remote (default: the last `berth login`, else http://127.0.0.1:3000)' },
  { name: 'quiet', boolean: true, help: 'no live line' },
];

const DESCRIPTION = `Sends open-model HTTP load: every request has an intended start time from the pattern, and its
latency is measured from that time (coordinated omission corrected, as wrk2), so a stalled server
shows in the percentiles. Requests sent more than 10 ms late count as late; requests that could not
get a connection within the timeout are dropped. Patterns: constant, ramp (--rps → --ramp-to), step
(--stages or --ramp-to), spike, wave, gradual, poisson (exponential gaps, mean --rps).

With --remote the control plane runs it (POST /api/workloads, through its proxy, on one of your
apps) and this command follows it live; --api / BERTH_API / BERTH_TOKEN / \`berth login\` say where.

Examples:
  berth load --app shop.localhost --rps 500 --duration 30s --pattern ramp --ramp-to 2000 --html r.html
  berth load --url http://127.0.0.1:9000/health --rps 200 --duration 10s --fail-on "p99>50ms,error_rate>0.1%"
  berth load --remote --app shop.example.com --rps 1000 --duration 1m --pattern spike --html spike.html`;

const USAGE = 'berth load (--app HOST | --url URL) --rps N [--duration 30s] [--pattern P] [--ramp-to N] [options]';

/** Most a CLI run may ask for (the API has its own, configurable limits). */
const MAX_RPS = 1_000_000;
const MAX_DURATION_S = 24 * 3600;

/** "30s", "2m", "1h30m", "500ms", "1.5s", "30" (seconds) → seconds. */
export function parseDuration(v: string, flag: string): number {
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    const n = Number(m[1]);
    total += m[2] === 'ms' ? n / 1000 : m[2] === 's' ? n : m[2] === 'm' ? n * 60 : n * 3600;
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== s.length) throw new UsageError(`--${flag} "${v}" is not a duration like 30s, 2m, 1h30m or 500ms`);
  return total;
}

function positiveNumber(v: string | undefined, flag: string, max: number, integer = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0 || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${flag} "${v}" must be ${integer ? `a whole number from 1 to ${max}` : `a number above 0, at most ${max}`}`);
  }
  return n;
}

export function parseStages(v: string): Stage[] {
  const stages: Stage[] = [];
  for (const part of v.split(',')) {
    const p = part.trim();
    const i = p.lastIndexOf(':');
    if (i <= 0) throw new UsageError(`--stages "${p}" must be DURATION:RPS, e.g. 10s:100`);
    const duration_seconds = parseDuration(p.slice(0, i), 'stages');
    const rps = Number(p.slice(i + 1));
    if (!Number.isFinite(rps) || rps < 0 || rps > MAX_RPS || p.slice(i + 1).trim() === '') throw new UsageError(`--stages "${p}": the rate must be a number between 0 and ${MAX_RPS}`);
    if (duration_seconds <= 0) throw new UsageError(`--stages "${p}": the duration must be positive`);
    stages.push({ duration_seconds, rps });
  }
  return stages;
}

/** An output file the run will write at its end: checked before a single request is sent. */
export function checkWritable(flag: string, file: string): void {
  const path = resolvePath(file);
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch { /* does not exist yet: fine */ }
  if (isDir) throw new UsageError(`${flag} ${file}: is a directory`);
  const dir = dirname(path);
  try {
    accessSync(dir, fsConstants.W_OK);
  } catch {
    throw new UsageError(`${flag} ${file}: cannot write into ${dir}`);
  }
}

/** Pull every --header / -H out of argv (parseArgs keeps only the last of a repeated flag). */
function extractHeaders(argv: string[]): { rest: string[]; headers: Record<string, string> } {
  const rest: string[] = [];
  const headers: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    let value: string | undefined;
    if (a === '--header' || a === '-H') {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`${a} needs a value "Name: value"`);
    } else if (a.startsWith('--header=')) value = a.slice(9);
    else {
      rest.push(a);
      continue;
    }
    const c = value.indexOf(':');
    if (c <= 0) throw new UsageError(`--header "${value}" must be "Name: value"`);
    headers[value.slice(0, c).trim()] = value.slice(c + 1).trim();
  }
  return { rest, headers };
}

/** Parse `berth load` argv into engine options (exported for tests). */
export function loadOptions(argv: string[], env = process.env): {
  options: WorkloadOptions; json?: string; html?: string; thresholds: Threshold[]; quiet: boolean; target: string; remote: boolean; api?: string;
  /** --app without --proxy-url: options.url is a placeholder until proxyFromControlPlane() answers */
  askProxy: boolean;
} {
  const { rest, headers } = extractHeaders(argv);
  // a boolean flag never takes the next word as its value (`--remote shop.localhost` is a mistake, not remote=shop.localhost)
  const booleans = new Set(SPECS.filter((o) => o.boolean).map((o) => `--${o.name}`));
  const args = parseArgs(rest.map((a) => (booleans.has(a) ? `${a}=true` : a)));
  if (args.positional.length) throw new UsageError(`unexpected argument "${args.positional[0]}"`);
  const o = resolveOptions(args, SPECS, env);
  for (const b of SPECS.filter((x) => x.boolean)) {
    if (o[b.name] !== undefined && o[b.name] !== 'true' && o[b.name] !== 'false') throw new UsageError(`--${b.name} takes no value (got "${o[b.name]}")`);
  }
  if (!o.app === !o.url) throw new UsageError('give exactly one of --app HOST (through the berth proxy) or --url URL');
  const stages = o.stages !== undefined ? parseStages(o.stages) : undefined;
  // the step pattern's stages set every rate and, unless --duration says otherwise, the length
  const rps = positiveNumber(o.rps, 'rps', MAX_RPS) ?? stages?.[0].rps;
  if (rps === undefined) throw new UsageError('--rps N is required');
  const stagesSeconds = stages?.reduce((a, s) => a + s.duration_seconds, 0);
  const duration_seconds = stagesSeconds !== undefined && !args.flags.has('duration') ? stagesSeconds : parseDuration(o.duration!, 'duration');
  if (duration_seconds <= 0 || duration_seconds > MAX_DURATION_S) throw new UsageError(`--duration must be between 1ms and ${MAX_DURATION_S / 3600}h`);
  if (stagesSeconds !== undefined && duration_seconds < stagesSeconds) {
    throw new UsageError(`--duration ${o.duration} is shorter than the --stages (${stagesSeconds}s): leave --duration out, or make it at least that`);
  }
  const pattern = o.pattern as PatternName;
  if (!(PATTERNS as readonly string[]).includes(pattern)) throw new UsageError(`--pattern must be one of ${PATTERNS.join(', ')}`);
  const ramp_to_rps = o['ramp-to'] !== undefined ? Number(o['ramp-to']) : undefined;
  if (ramp_to_rps !== undefined && (!Number.isFinite(ramp_to_rps) || ramp_to_rps < 0 || ramp_to_rps > MAX_RPS || o['ramp-to']!.trim() === '')) {
    throw new UsageError(`--ramp-to must be a number between 0 and ${MAX_RPS}`);
  }
  const connections = positiveNumber(o.connections, 'connections', 10_000, true);
  const timeoutS = parseDuration(o.timeout!, 'timeout');
  if (timeoutS < 0.01 || timeoutS > 600) throw new UsageError('--timeout must be between 10ms and 10m');
  let body: Buffer | undefined;
  if (o.body !== undefined) {
    if (o.body.startsWith('@')) {
      const file = o.body.slice(1);
      try {
        // checked before reading: /dev/zero or a FIFO must not be read without end
        const st = statSync(file);
        if (!st.isFile()) throw new Error('not a regular file');
        if (st.size > MAX_BODY_BYTES) throw new Error(`${st.size} bytes; at most ${MAX_BODY_BYTES}`);
        body = readFileSync(file);
      } catch (e) {
        throw new UsageError(`--body ${o.body}: ${(e as Error).message}`);
      }
    } else body = Buffer.from(o.body, 'utf8');
  }
  let url: string;
  let host: string | undefined;
  if (o.app) {
    url = o['proxy-url'] ?? FALLBACK_PROXY_URL;
    host = o.app.trim().toLowerCase();
  } else url = o.url!;
  const options: WorkloadOptions = {
    url, host, method: o.method, path: o.path ?? (o.app ? '/' : undefined), headers, body,
    pattern, rps, duration_seconds, ramp_to_rps, stages, connections, timeout_ms: Math.round(timeoutS * 1000),
    app_hostnames: o.app ? [host!] : [],
    ...(o.precise === 'true' ? { precise: true } : {}),
  };
  const bad = checkPattern(options);
  if (bad) throw new UsageError(bad);
  if (peakRate(options) > MAX_RPS) throw new UsageError(`the pattern peaks at ${peakRate(options)} req/s; at most ${MAX_RPS}`);
  try {
    prepareRequest(options);
  } catch (e) {
    if (e instanceof RequestSpecError) throw new UsageError(e.message);
    throw e;
  }
  let thresholds: Threshold[] = [];
  if (o['fail-on'] !== undefined) {
    try {
      thresholds = parseThresholds(o['fail-on']);
    } catch (e) {
      if (e instanceof ThresholdError) throw new UsageError(`--fail-on: ${e.message}`);
      throw e;
    }
  }
  // output files are checked before a single request is sent, not after a 30-minute run
  for (const [flag, file] of [['json', o.json], ['html', o.html]] as const) {
    if (file === undefined || (flag === 'json' && file === '-')) continue;
    checkWritable(`--${flag}`, file);
  }
  const remote = o.remote === 'true';
  if (remote && !o.app) throw new UsageError('--remote runs on the control plane against one of your apps: give --app HOST (not --url)');
  if (remote && options.precise) throw new UsageError('--precise is for local runs; the control plane picks the timing itself');
  // (the API's own bound, in the flag's words: its answer names the API field)
  if (remote && options.duration_seconds > API_MAX_DURATION_S) throw new UsageError(`--duration: a --remote run lasts at most ${API_MAX_DURATION_S / 3600}h (the control plane's limit; a control plane may set a lower one)`);
  const target = remote ? `${host} (on the control plane)` : o.app ? `${host} via ${url}` : url;
  const askProxy = !remote && o.app !== undefined && o['proxy-url'] === undefined;
  return { options, json: o.json, html: o.html, thresholds, quiet: o.quiet === 'true', target, remote, api: o.api, askProxy };
}

/**
 * The proxy URL names the API's own machine: the same host, or both loopback. (Not a parent
 * domain: `a.duckdns.org` and `b.duckdns.org` are different people's; no public-suffix list here.)
 */
function sameSite(a: string, b: string): boolean {
  if (a === b) return true;
  return isLoopbackName(a) && isLoopbackName(b);
}

/**
 * The proxy apps answer on, as the control plane of --api / BERTH_API / the last `berth login`
 * names it (`GET /api/info`, no token needed): `berth up --proxy-listen :8380` or a
 * BERTH_PUBLIC_URL is followed without a flag. Unreachable, or not plain http: the fallback,
 * with a line saying why.
 */
export async function proxyFromControlPlane(api: string | undefined, warn: (line: string) => void): Promise<string> {
  let client: BerthClient | undefined;
  try {
    client = await BerthClient.resolve({ api });
    const info = await client.get<{ proxy_url?: unknown }>('/api/info', { anonymous: true, signal: AbortSignal.timeout(3000) });
    const u = typeof info?.proxy_url === 'string' ? info.proxy_url : '';
    // followed only to the control plane's own host: an answer (a hostile server, or anyone on a
    // plain-http path) must not aim this load, and its headers, at a host of its choosing
    let parsed: URL | null = null;
    try { parsed = new URL(u); } catch { /* not a URL */ }
    const apiHost = new URL(client.api).hostname;
    if (parsed !== null && parsed.protocol === 'http:' && sameSite(parsed.hostname, apiHost) && !parsed.username && !parsed.password) return parsed.origin;
    warn(u === '' ? `the control plane at ${client.api} names no proxy URL; using ${FALLBACK_PROXY_URL} (--proxy-url to choose)`
      : parsed !== null && parsed.protocol === 'http:' && !sameSite(parsed.hostname, apiHost)
        ? `the control plane's proxy URL ${printable(u)} is not on the API's machine (${apiHost}); using ${FALLBACK_PROXY_URL} (--proxy-url ${printable(u)} to send there)`
        : `the control plane's proxy URL ${printable(u)} is not plain http://; using ${FALLBACK_PROXY_URL} (--proxy-url to choose)`);
  } catch (e) {
    warn(`could not ask ${client?.api ?? 'the control plane'} for its proxy URL (${(e as Error).message}); using ${FALLBACK_PROXY_URL} (--proxy-url to choose)`);
  }
  return FALLBACK_PROXY_URL;
}

const n0 = (n: number) => Math.round(n).toLocaleString('en-US');

function liveLine(p: Progress): string {
  const errPct = p.total_requests > 0 ? (100 * p.errors) / p.total_requests : 0;
  return `${String(Math.min(p.elapsed_s, Math.ceil(p.duration_s))).padStart(4)}s / ${p.duration_s}s  target ${n0(p.point.target_rps)}/s  achieved ${n0(p.point.achieved_rps)}/s  ` +
    `p50 ${msText(p.p50_ms)}  p99 ${msText(p.p99_ms)}  errors ${n0(p.errors)} (${errPct.toFixed(2)}%)` +
    (p.late ? `  late ${n0(p.late)}` : '') + (p.dropped ? `  dropped ${n0(p.dropped)}` : '') + `  conns ${p.connections}`;
}

export function summaryTable(m: WorkloadMetrics, target: string, o: WorkloadOptions): string {
  const rows: [string, string][] = [
    ['target', target],
    ['pattern', `${o.pattern} ${o.rps} req/s${o.ramp_to_rps !== undefined ? ` → ${o.ramp_to_rps}` : ''} for ${o.duration_seconds}s`],
    ['requests', `${n0(m.total_requests)} of ${n0(m.scheduled_requests)} scheduled (${n0(m.successful_requests)} ok, ${n0(m.failed_requests)} failed, ${m.error_rate.toFixed(2)}%)`],
    ['rate', `${m.requests_per_second.toLocaleString('en-US')} req/s achieved, ${m.target_rps.toLocaleString('en-US')} req/s target`],
    ['latency', `p50 ${msText(m.p50_latency_ms)}  p90 ${msText(m.p90_latency_ms)}  p95 ${msText(m.p95_latency_ms)}  p99 ${msText(m.p99_latency_ms)}  p99.9 ${msText(m.p999_latency_ms)}`],
    ['', `min ${msText(m.min_latency_ms)}  avg ${msText(m.avg_latency_ms)}  max ${msText(m.max_latency_ms)}  (from each request's intended start)`],
    ['late / dropped', `${n0(m.late_requests)} sent > ${m.late_threshold_ms} ms late, ${n0(m.dropped_requests)} dropped`],
    ['send delay', `p50 ${msText(m.send_delay_p50_ms ?? null)}  p99 ${msText(m.send_delay_p99_ms ?? null)}  max ${msText(m.send_delay_max_ms ?? null)}  (intended start → sent; part of the latency above${o.precise || peakRate(o) >= PRECISE_FROM_RPS ? '' : ': 1 ms timers below 5,000 req/s, --precise for sub-ms'})`],
    ['status codes', Object.entries(m.status_code_distribution).map(([k, v]) => `${k}: ${n0(v)}`).join('  ') || '—'],
    ['errors', Object.entries(m.errors).map(([k, v]) => `${k}: ${n0(v)}`).join('  ') || '—'],
    ['connections', `${m.connections_max} at most, ${m.connections_opened} opened`],
    ['duration', `${m.duration_seconds}s${m.stopped ? ' (stopped early)' : ''}`],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join('\n') + '\n';
}

export async function run(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(formatHelp(USAGE, DESCRIPTION, SPECS));
    return;
  }
  const loaded = loadOptions(argv);
  const { options, json, html, thresholds, quiet, remote, api } = loaded;
  let target = loaded.target;
  const out = json === '-' ? process.stderr : process.stdout;
  if (loaded.askProxy) {
    options.url = await proxyFromControlPlane(api, (line) => process.stderr.write(`berth load: ${terminalSafe(process.stderr, line)}\n`));
    target = `${options.host} via ${options.url}`;
  }
  const tty = Boolean(process.stderr.isTTY);
  const every = options.duration_seconds > 60 ? 10 : 5;
  out.write(`berth load: ${printable(target)}  ${options.pattern} ${options.rps} req/s${options.ramp_to_rps !== undefined ? ` → ${options.ramp_to_rps}` : ''} for ${options.duration_seconds}s\n`);
  const onProgress = (p: Progress) => {
    if (quiet) return;
    // (with --remote its numbers come from the server: made printable, as every server text is)
    if (tty) process.stderr.write(`\r\x1b[2K${printable(liveLine(p))}`);
    else if (p.elapsed_s % every === 0) process.stderr.write(`${printable(liveLine(p))}\n`);
  };
  let interrupted = false;
  const interrupt = new AbortController();
  let stopLocal = () => {};
  const onSig = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    interrupt.abort();
    stopLocal();
  };
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  let m: WorkloadMetrics;
  let remoteReport: string | undefined;
  /** the control plane ended the run as failed (its metrics so far are shown): exit 1 */
  let runFailed = false;
  // a report is meant to be shared: credentials in --header values are not written into it (the API redacts them alike)
  let config: Record<string, unknown> = { ...options, headers: redactHeaders(options.headers), body: options.body ? `${options.body.length} bytes` : undefined, random: undefined, target };
  if (remote) {
    let r;
    try {
      r = await runRemote({
        options, api, onProgress, stopSignal: interrupt.signal, wantReport: html !== undefined,
        onStart: (id, at) => out.write(`  workload #${num(id)} started on ${printable(String(at))}\n`),
      });
    } catch (e) {
      if (e instanceof ClientError) {
        if (tty && !quiet) process.stderr.write('\n');
        process.stderr.write(`berth load: ${terminalSafe(process.stderr, e.message)}\n`);
        process.exit(e.exitCode);
      }
      throw e;
    }
    if (!r.metrics) {
      out.write(`\n  workload #${num(r.id)} ${terminalSafe(out, String(r.status))}${r.status_reason ? `: ${terminalSafe(out, r.status_reason)}` : ''}, no metrics\n`);
      process.exit(1);
    }
    m = r.metrics;
    remoteReport = r.report;
    config = { ...r.config, id: r.id, api: r.api, status: r.status, status_reason: r.status_reason };
    if (r.status === 'failed') {
      out.write(`\n  the run failed on the control plane: ${terminalSafe(out, r.status_reason ?? '')}\n`);
      runFailed = true;
    }
  } else {
    const r = runWorkload(options, onProgress);
    stopLocal = () => r.stop();
    m = await r.done;
  }
  process.off('SIGINT', onSig);
  process.off('SIGTERM', onSig);
  if (tty && !quiet) process.stderr.write('\n');
  out.write('\n' + printable(summaryTable(m, target, options)));
  if (json) {
    const text = JSON.stringify({ config, metrics: m }, null, 2) + '\n';
    if (json === '-') process.stdout.write(text);
    else writeFileSync(json, text);
  }
  if (html) {
    writeFileSync(html, remoteReport ?? renderReport({ title: `berth load: ${target}`, config, metrics: m }));
    out.write(`  report written to ${html}\n`);
  }
  const failed = failedThresholds(thresholds, m);
  for (const f of failed) out.write(`  FAIL ${f.threshold.text} (actual ${shownValue(f.threshold.metric, f.actual)})\n`);
  if (thresholds.length && !failed.length) out.write(`  passed: no --fail-on condition held (${thresholds.map((t) => t.text).join(', ')})\n`);
  if (interrupted) process.exit(130);
  if (failed.length || runFailed) process.exit(1);
  if (m.successful_requests === 0) {
    out.write('  no request succeeded\n');
    process.exit(1);
  }
}
