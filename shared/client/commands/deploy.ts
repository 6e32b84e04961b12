import { setTimeout as wait } from 'node:timers/promises';
import { credentialsPath } from '../credentials.js';
import { CPU_RANGE, cpuAmount, IMAGE_INT_FIELDS as N, fieldProblem, type ImageTextField } from '../../image-fields.js';
import { tagProblem } from '../../tag.js';
import { appHostnameProblem, isValidHostPattern, normalizeHost } from '../../hostname.js';
import { envSetProblem } from '../../env-vars.js';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { basename, resolve } from 'node:path';
import { UsageError } from '../../cli/args.js';
import { BerthClient, ClientError, EXIT } from '../client.js';
import { booleanOption, defineClientCommand, intOption } from '../command.js';
import { formatBytes, formatDuration, printJson, Progress, Status } from '../output.js';
import { packDirectory } from '../pack.js';
import { envAssignment, readEnvFile } from '../env-file.js';
import { readSse } from '../sse.js';
import { appUrls } from '../urls.js';
import { num, paint, printable, terminalSafe } from '../style.js';

/**
 * `berth deploy [DIR] --host HOST`: from a folder to a URL, like `gcloud run deploy --source`.
 * Phases, each timed: pack (DIR as a .tar.gz, .dockerignore honoured, no links out) → upload
 * (progress bar) → build (the log streamed live from GET /api/images/:id/build-logs?follow=1) →
 * start (the revision's min_instances healthy) → traffic (the new revision serving, when the API
 * has revisions) → the URLs. A failed build prints the tail of its log and exits 1.
 * Progress and the build log go to stderr; the result to stdout (one JSON object with --json).
 * Fields from the API in the lines a person reads (hostname, tag, URLs, reasons) are `printable`;
 * the build log, the app's own output, is `terminalSafe` like `berth logs`.
 */

interface Image {
  id: number; app_hostname: string; status: string; status_reason?: string | null; min_instances: number;
  revision?: number; name: string;
  /** set when the control plane gave the revision up (it could not start) */
  start_failure?: string | null;
  /** why none, or not all, of its instances can be made now (the container quota is full) */
  start_blocked?: string | null;
  /**
   * how the deploy joined the app's traffic (absent from older control planes): all, latest (a
   * split set by hand is kept, as Cloud Run keeps it: the `latest` share), none
   */
  joins_traffic?: 'all' | 'latest' | 'none' | null;
}
interface Container { id: number; status: string; health: string; status_reason: string | null; desired?: string; host_port?: number | null; internal_port?: number | null; restart_count?: number; healthy_at?: string | null }
interface AppRevision { image_id: number; revision: number; traffic_percent: number; traffic_tag: string | null; tag_url: string | null; serving?: boolean; served?: boolean; proving?: boolean; start_failure?: string | null }
interface App { app_hostname: string; url: string; revisions: AppRevision[]; deleting_at?: string | null }

const TAIL_LINES = 25;
/** A build log line longer than this (no newline in 1 MiB) stops the deploy rather than fill memory. */
const MAX_LINE = 1024 * 1024;

export const run = defineClientCommand({
  usage: `berth deploy [DIR] --host HOST [--min N] [--max N] [--concurrency N] [--port N] [--cpu C] [--memory M]
                    [--health-path P] [--request-timeout 5m] [--env NAME=VALUE …] [--env-file F]
                    [--unset-env NAME] [--clear-env] [--session-affinity | --no-session-affinity]
                    [--upstream-pipeline N] [--private | --public] [--no-traffic] [--tag T] [--no-build] [--name N] [--timeout S]`,
  description: `Deploy a folder with a Dockerfile at its root to a URL: pack it (honouring .dockerignore,
refusing symlinks that lead out of it), upload it, stream the build log, wait until the new
revision is ready and its instances are healthy, then print its URLs and how long each phase took.
A second deploy under the same --host is the app's next revision; settings it leaves out are kept.
DIR defaults to the current directory.`,
  positional: { min: 0, max: 1, names: 'DIR' },
  options: [
    { name: 'host', env: 'BERTH_HOST', help: 'the app hostname (e.g. hello.localhost, shop.example.com)' },
    { name: 'name', help: 'image name (default: from the hostname; kept by later revisions)' },
    { name: 'min', help: 'min_instances (0 = scale to zero; default 1)' },
    { name: 'max', help: 'max_instances: how far the autoscaler may scale it out (1–100; default: --min, at least 1, so it does not scale out until given; a later revision keeps the last one)' },
    { name: 'concurrency', help: 'container_concurrency: requests per instance at once (0 = no limit; default 80)' },
    { name: 'port', help: 'container_port the app listens on, also given as $PORT (default 8080)' },
    { name: 'cpu', help: 'cpu_limit, e.g. 0.5 or 500m' },
    { name: 'memory', help: 'memory_limit, e.g. 256m, 1g' },
    { name: 'health-path', help: 'path the health check asks (default: a TCP connect)' },
    { name: 'request-timeout', help: 'how long a request may wait for the app\'s response: 300, 90s, 5m, 1h (default 300s, at most 1h); then 504' },
    { name: 'session-affinity', boolean: true, help: 'keep each client on the instance (and revision) that first answered it, by a cookie (best effort, as Cloud Run\'s)' },
    { name: 'no-session-affinity', boolean: true, help: 'turn session affinity off again' },
    { name: 'upstream-pipeline', help: 'let the proxies pipeline up to N GET requests on one connection to an instance (2-16; 1 = never, the default): faster under load, for app servers that handle HTTP/1.1 pipelining' },
    { name: 'private', boolean: true, help: 'only callers with an invoker token reach the app (berth access HOST --add-invoker NAME); set before the new revision serves' },
    { name: 'public', boolean: true, help: 'anyone may call the app again' },
    { name: 'no-traffic', boolean: true, help: 'the new revision takes no traffic (use with --tag to try it first)' },
    { name: 'tag', help: 'traffic tag: the revision also answers at TAG---HOST' },
    { name: 'env', repeatable: true, help: 'NAME=VALUE: an environment variable of the app (repeat for more); the others stay as the previous revision had them' },
    { name: 'env-file', help: 'read NAME=VALUE lines (dotenv) as --env; --env wins over the file' },
    { name: 'unset-env', repeatable: true, help: 'NAME (or NAME,NAME…): remove variables the previous revision had' },
    { name: 'clear-env', boolean: true, help: 'start from no variables instead of the previous revision\'s' },
    { name: 'no-build', boolean: true, help: 'no DIR, no upload, no build: a new revision runs the newest built image with the changed flags (--env, --min, --request-timeout…)' },
    { name: 'timeout', default: '600', help: 'seconds to wait for build + healthy instances' },
  ],
  async run({ opts, args, list, json, client, stdout, stderr, signal }) {
    const t0 = Date.now();
    const host = opts.host?.trim();
    if (!host) throw new UsageError('--host HOST is required (the app hostname, e.g. --host hello.localhost)');
    if (host.length > 253 || !/^[A-Za-z0-9.-]+$/.test(host)) throw new UsageError(`--host "${host.slice(0, 80)}" is not a hostname`);
    const hostProblem = appHostnameProblem(normalizeHost(host));
    if (hostProblem !== null) throw new UsageError(`--host "${host}" ${hostProblem}`);
    // (the control plane's rule: labels of 1–63 characters, not starting or ending with "-")
    if (!isValidHostPattern(normalizeHost(host))) {
      throw new UsageError(`--host "${host.slice(0, 80)}" is not a valid hostname: labels of 1–63 letters, digits and "-", not starting or ending with "-", joined by single dots`);
    }
    // the control plane's own rules (shared/image-fields.ts), checked before anything is packed or uploaded
    const min = intOption(opts.min, 'min', N.min_instances.min, N.min_instances.max);
    const max = intOption(opts.max, 'max', N.max_instances.min, N.max_instances.max);
    if (min !== undefined && max !== undefined && min > max) throw new UsageError(`--min ${min} is more than --max ${max}`);
    const concurrency = intOption(opts.concurrency, 'concurrency', N.container_concurrency.min, N.container_concurrency.max);
    const port = intOption(opts.port, 'port', N.container_port.min, N.container_port.max);
    const timeoutS = intOption(opts.timeout, 'timeout', 1, 86_400)!;
    const requestTimeout = opts['request-timeout'] === undefined ? undefined : seconds(opts['request-timeout'], 'request-timeout', N.request_timeout_s.min, N.request_timeout_s.max);
    const noTraffic = booleanOption(opts['no-traffic'], 'no-traffic');
    const affinityOn = booleanOption(opts['session-affinity'], 'session-affinity');
    const affinityOff = booleanOption(opts['no-session-affinity'], 'no-session-affinity');
    if (affinityOn && affinityOff) throw new UsageError('--session-affinity and --no-session-affinity contradict each other');
    const affinity = affinityOn ? true : affinityOff ? false : undefined;
    const pipeline = intOption(opts['upstream-pipeline'], 'upstream-pipeline', N.upstream_pipeline.min, N.upstream_pipeline.max);
    const makePrivate = booleanOption(opts.private, 'private');
    const makePublic = booleanOption(opts.public, 'public');
    if (makePrivate && makePublic) throw new UsageError('--private and --public contradict each other');
    // the app's access (Cloud Run's --[no-]allow-unauthenticated): set as soon as the app exists,
    // before the new revision can serve
    const setAccess = async (appHost: string) => {
      if (!makePrivate && !makePublic) return;
      await client.patch(`/api/apps/${encodeURIComponent(appHost)}`, { private: makePrivate }, { signal });
      say(`${paint(stderr, 'green', '✔')} ${printable(appHost)} is ${makePrivate ? 'private: only callers with an invoker token reach it (berth access)' : 'public'}`);
    };
    checkField('cpu', 'cpu_limit', opts.cpu);
    if (opts.cpu !== undefined && cpuAmount(opts.cpu) === null) throw new UsageError(`--cpu "${opts.cpu}" must be ${CPU_RANGE}`);
    checkField('memory', 'memory_limit', opts.memory);
    checkField('health-path', 'health_path', opts['health-path']);
    const tagBad = opts.tag === undefined ? null : tagProblem(opts.tag);
    if (tagBad !== null) throw new UsageError(`--tag "${opts.tag}" ${tagBad}`);
    // environment: the file, then --env over it; names checked by the control plane's rule
    const env = new Map<string, string>(opts['env-file'] !== undefined ? readEnvFile(opts['env-file']) : []);
    for (const a of list('env')) {
      const [k, v] = envAssignment(a, '--env');
      env.set(k, v);
    }
    const envProblem = envSetProblem(env);
    if (envProblem !== null) throw new UsageError(`--env: ${envProblem}`);
    const unset = list('unset-env').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
    for (const n of unset) {
      if (env.has(n)) throw new UsageError(`--unset-env ${n} and --env ${n}=… contradict each other`);
    }
    const clearEnv = booleanOption(opts['clear-env'], 'clear-env');
    const noBuild = booleanOption(opts['no-build'], 'no-build');
    if (noBuild && args[0] !== undefined) throw new UsageError(`--no-build deploys no folder: leave out "${args[0].slice(0, 80)}"`);
    if (noBuild && opts.name !== undefined) throw new UsageError('--no-build keeps the image and its name: leave out --name');
    const dir = args[0] ?? '.';
    client.requireToken();
    const deadline = t0 + timeoutS * 1000;
    const phases: Record<string, number> = {};
    const say = (line: string) => { stderr.write(`${line}\n`); };
    const ok = paint(stderr, 'green', '✔');

    // is this the app's first revision? (its name is then ours to choose)
    const images = (await client.get<{ images: Image[] }>('/api/images', { signal })).images;
    const existing = images.filter((i) => i.app_hostname === host.toLowerCase().replace(/\.$/, ''));
    const name = opts.name ?? (existing.length ? undefined : defaultName(host, dir));
    checkField('name', 'name', name);

    let t = Date.now();
    let packed: Awaited<ReturnType<typeof packDirectory>> | null = null;
    // what the server goes on doing if the command is interrupted now
    let onServer = 'goes on building and starting';
    let img: Image | undefined;
    // the platform's public facts (GET /api/info, no login): its upload limit, the proxy's URL; read
    // once (an older control plane, or none reachable: neither is known)
    type PlatformInfo = { proxy_url?: string | null; max_upload_bytes?: number };
    let info: PlatformInfo | undefined;
    const platformInfo = async (): Promise<PlatformInfo> => (info ??= await client.get<PlatformInfo>('/api/info', { anonymous: true, signal }).catch((): PlatformInfo => ({})));
    try {
      if (noBuild) {
        // a new revision from the image the app has: the settings and environment change, nothing is built
        const body: Record<string, unknown> = {};
        if (min !== undefined) body.min_instances = min;
        if (max !== undefined) body.max_instances = max;
        if (concurrency !== undefined) body.container_concurrency = concurrency;
        if (port !== undefined) body.container_port = port;
        if (opts.cpu !== undefined) body.cpu_limit = opts.cpu;
        if (opts.memory !== undefined) body.memory_limit = opts.memory;
        if (opts['health-path'] !== undefined) body.health_path = opts['health-path'];
        if (requestTimeout !== undefined) body.request_timeout_s = requestTimeout;
        if (affinity !== undefined) body.session_affinity = affinity;
        if (pipeline !== undefined) body.upstream_pipeline = pipeline;
        if (noTraffic) body.no_traffic = true;
        if (opts.tag !== undefined) body.traffic_tag = opts.tag;
        if (env.size) body.env = Object.fromEntries(env);
        if (unset.length) body.env_unset = unset;
        if (clearEnv) body.env_clear = true;
        img = await client.post<Image>(`/api/apps/${encodeURIComponent(host)}/revisions`, body, { signal });
        await setAccess(img.app_hostname);
        phases.revise = Date.now() - t;
        say(`${ok} Revision ${num(img.revision)} of ${printable(img.app_hostname)} (image ${num(img.id)}): the newest built image with the new settings, no build ${dim(stderr, formatDuration(phases.revise))}`);
      } else {
      // pack
      packed = await packDirectory(dir, [
        ...(opts['env-file'] !== undefined ? [{ path: resolve(opts['env-file']), what: 'the --env-file (its values go as variables, never into the image)' }] : []),
        { path: credentialsPath(), what: 'your berth credentials file (every API token you hold)' },
      ]);
      phases.pack = Date.now() - t;
      for (const w of packed.warnings) say(`warning: ${printable(w)}`);
      say(`${ok} Packed ${resolve(dir)}: ${packed.files} files, ${formatBytes(packed.rawBytes)} → ${formatBytes(packed.bytes)} gzipped${packed.ignored ? ` (${packed.ignored} ignored by .dockerignore)` : ''} ${dim(stderr, formatDuration(phases.pack))}`);

      // past the platform's upload limit: said now, not after sending it (older control planes do not say)
      const limit = (await platformInfo()).max_upload_bytes;
      if (typeof limit === 'number' && packed.bytes > limit) {
        throw new ClientError(`the packed folder is ${formatBytes(packed.bytes)}, more than this platform's upload limit of ${formatBytes(limit)}: leave out what the build does not need with a .dockerignore`, EXIT.failed);
      }

      // upload
      const fields: Record<string, string> = { app_hostname: host };
      if (name !== undefined) fields.name = name;
      if (min !== undefined) fields.min_instances = String(min);
      if (max !== undefined) fields.max_instances = String(max);
      if (concurrency !== undefined) fields.container_concurrency = String(concurrency);
      if (port !== undefined) fields.container_port = String(port);
      if (opts.cpu !== undefined) fields.cpu_limit = opts.cpu;
      if (opts.memory !== undefined) fields.memory_limit = opts.memory;
      if (opts['health-path'] !== undefined) fields.health_path = opts['health-path'];
      if (requestTimeout !== undefined) fields.request_timeout_s = String(requestTimeout);
      if (affinity !== undefined) fields.session_affinity = String(affinity);
      if (pipeline !== undefined) fields.upstream_pipeline = String(pipeline);
      if (noTraffic) fields.no_traffic = 'true';
      if (opts.tag !== undefined) fields.traffic_tag = opts.tag;
      if (env.size) fields.env = JSON.stringify(Object.fromEntries(env));
      if (unset.length) fields.env_unset = JSON.stringify(unset);
      if (clearEnv) fields.env_clear = 'true';
      t = Date.now();
      const progress = new Progress('Uploading', packed.bytes, stderr);
      const body = multipart(fields, packed.file, packed.bytes, (n) => progress.update(n));
      img = await client.request<Image>('POST', '/api/images', {
        body: body.stream, headers: { 'content-type': `multipart/form-data; boundary=${body.boundary}`, 'content-length': String(body.length) },
        signal, timeoutMs: 600_000,
      });
      phases.upload = Date.now() - t;
      const shownHost = printable(img.app_hostname);
      progress.done(`${ok} Uploaded ${formatBytes(packed.bytes)} ${dim(stderr, formatDuration(phases.upload))}`);
      await setAccess(img.app_hostname);
      signal.addEventListener('abort', () => {
        stderr.write(`\ninterrupted: image ${num(img!.id)} of ${shownHost} ${onServer} on the server (berth apps ${shownHost}, berth logs ${shownHost})\n`);
      }, { once: true });
      const rev = img.revision ? `revision ${num(img.revision)} of ` : '';
      say(`  Building ${rev}${shownHost} (image ${num(img.id)})…`);

      // build, log streamed live
      t = Date.now();
      const { status, tail } = await followBuild(client, img.id, stderr, signal, deadline);
      phases.build = Date.now() - t;
      if (status !== 'ready') {
        const final = await client.get<Image>(`/api/images/${img.id}`, { signal });
        printBuildFailure(stderr, img.app_hostname, img.revision ?? null, phases.build, final.status_reason, tail);
        if (json) printJson({ ok: false, app_hostname: img.app_hostname, image_id: img.id, revision: img.revision ?? null, status: final.status, status_reason: final.status_reason ?? null, log_tail: tail });
        return EXIT.failed;
      }
      say(`${ok} Built image ${num(img.id)} ${dim(stderr, formatDuration(phases.build))}`);
      onServer = 'goes on starting';
      }
      const shownHost = printable(img.app_hostname);

      // how it joined the traffic (the control plane's word): a split set by hand is kept, as Cloud
      // Run keeps it, so a plain deploy may take only the split's `latest` share, or nothing
      const joins = img.joins_traffic ?? (noTraffic ? 'none' : 'all');
      const quiet = joins === 'none';
      // (no share, but deployed with traffic: the control plane proves it all the same, outside the split)
      const aside = quiet && !noTraffic;

      // instances healthy (a revision that scales from zero, or waits untagged without traffic, has none)
      t = Date.now();
      // (one proven outside the split is proven by its first healthy instance, then runs nothing)
      let wantInstances = aside ? 1 : quiet && opts.tag === undefined ? 0 : img.min_instances;
      // one that scales from zero, deployed with traffic, is started once to prove it can serve
      // before it takes the traffic (the control plane says so)
      // (or one given up on already: waitHealthy says why at once)
      const proven = wantInstances === 0 && !quiet && (await proving(client, img.app_hostname, img.id, signal));
      /** proven outside the split, a newer deploy took its place first */
      let replaced = false;
      if (proven) wantInstances = 1;
      if (wantInstances > 0) {
        const short = await waitHealthy(client, img.id, wantInstances, deadline, stderr, signal, img.app_hostname, aside);
        phases.start = Date.now() - t;
        if (short?.superseded === true) {
          replaced = true;
          say(`${paint(stderr, 'yellow', '!')} a newer revision was deployed before this one was proven: it is proven instead, and this one is not started (it has no share of the traffic)`);
          wantInstances = 0;
        } else if (short !== null) {
          say(`${paint(stderr, 'yellow', '!')} ${num(short.healthy)} of ${num(wantInstances)} instances healthy; no more can start now (${printable(short.blocked)}). It serves with these; the rest start as room frees.`);
          wantInstances = short.healthy;
        }
        if (wantInstances > 0) {
          const then = aside ? (opts.tag === undefined ? ': it can serve (it runs nothing until a split names it)' : ': it can serve (its tag URL answers; no share until a split gives it one)')
            : proven ? ': it can serve (the autoscaler scales it to zero when idle)' : '';
          say(`${ok} ${wantInstances} instance${wantInstances === 1 ? '' : 's'} healthy${then} ${dim(stderr, formatDuration(phases.start))}`);
          onServer = 'is up';
        }
      } else {
        say(`${ok} Ready; ${img.min_instances === 0 ? 'scales from zero: the first request starts an instance' : 'takes no traffic, so no instance runs yet'}`);
      }

      // traffic (with revisions): until the new revision serves its share
      t = Date.now();
      const app = await waitTraffic(client, img.app_hostname, img.id, quiet, deadline, signal);
      const imageId = img.id;
      const mine = app?.revisions.find((r) => r.image_id === imageId);
      if (app && !quiet) phases.traffic = Date.now() - t;

      // every proxy has the new table (and, when it serves, the revision's instances): curl works now
      t = Date.now();
      const routed = !quiet || opts.tag !== undefined;
      // (one with no route — no share, no tag — is never listed by a proxy: nothing to wait for)
      const ports = wantInstances > 0 && routed ? (await client.get<{ containers: Container[] }>(`/api/images/${img.id}/containers`, { signal })).containers
        .filter((c) => c.status === 'running' && c.health === 'healthy' && c.host_port).map((c) => c.host_port!) : [];
      const proxies = await waitPropagated(client, routed ? `img-${img.id}` : undefined, ports, signal);
      phases.proxies = Date.now() - t;
      if (proxies === 0) say(`${paint(stderr, 'yellow', '!')} no proxy is connected to the control plane: the app is ready but nothing routes to it yet`);

      // URLs
      const proxyUrl = (await platformInfo()).proxy_url ?? null;
      const urls = appUrls(img.app_hostname, proxyUrl);
      const tagUrls = mine?.traffic_tag ? appUrls(`${mine.traffic_tag}---${img.app_hostname}`, proxyUrl) : [];
      const total = Date.now() - t0;
      const share = mine ? `${num(mine.traffic_percent)}% of traffic` : quiet ? 'no traffic' : 'all traffic';
      // a split set by hand (berth traffic) outlives deploys: say so, and how to follow deploys again
      const kept = joins === 'latest' || (joins === 'none' && !noTraffic)
        ? `  the app's traffic names revisions (set by berth traffic, or pinned by a --no-traffic deploy) and deploys keep that split, as Cloud Run does: ${joins === 'latest' ? 'this revision took its "latest" share' : replaced ? 'this revision has no share of it (a newer one is proven in its place)' : `this revision has no share of it (berth traffic ${shownHost} ${num(mine?.revision ?? img.revision ?? 0)}=100 sends it all)`};\n  berth traffic ${shownHost} latest=100 sends all of it to each new deploy again`
        : null;
      if (json) {
        printJson({
          ok: true, app_hostname: img.app_hostname, image_id: img.id, revision: mine?.revision ?? img.revision ?? null,
          traffic_percent: mine?.traffic_percent ?? (quiet ? 0 : 100), traffic_tag: mine?.traffic_tag ?? opts.tag ?? null,
          joins_traffic: joins, urls, tag_urls: tagUrls, timings_ms: { ...phases, total },
        });
      } else {
        const revision = mine?.revision ?? img.revision;
        stdout.write([
          '',
          `${ok} Deployed ${shownHost}${revision ? ` revision ${num(revision)}` : ''} (image ${num(img.id)}), serving ${share}, in ${formatDuration(total)}`,
          `  ${Object.entries(phases).map(([k, v]) => `${k} ${formatDuration(v)}`).join(' · ')}`,
          ...(kept === null ? [] : [kept]),
          '',
          ...urls.map((u, i) => `  ${i === 0 ? 'URL ' : '    '}  ${printable(u)}`),
          ...tagUrls.map((u, i) => `  ${i === 0 ? 'tag ' : '    '}  ${printable(u)}`),
          `  logs  berth logs ${shownHost} --follow`,
          '',
        ].join('\n'));
      }
      return EXIT.ok;
    } catch (e) {
      // deleted meanwhile (berth delete, DELETE /api/images/:id): the server stopped its build or its instances
      if (img !== undefined && e instanceof ClientError && e.api?.status === 404 && e.api.code === 'not_found') {
        throw new ClientError(`image ${img.id} of ${printable(img.app_hostname)} is gone: it, or its app, was deleted while it deployed`, EXIT.failed, e.api);
      }
      throw e;
    } finally {
      await packed?.cleanup();
    }
  },
});

/**
 * A failed build's reason and log tail. Both come from the build (the server's reason quotes the
 * Dockerfile's output): on a terminal their control characters are defused like the live log.
 */
export function printBuildFailure(out: NodeJS.WriteStream, host: string, revision: number | null, ms: number, reason: string | null | undefined, tail: string[]): void {
  out.write(`\n${paint(out, 'red', '✘')} Build failed after ${formatDuration(ms)}${reason ? `: ${terminalSafe(out, reason)}` : ''}\n`);
  if (tail.length) out.write(`  last lines of the build log:\n${tail.map((l) => `    ${terminalSafe(out, l)}`).join('\n')}\n`);
  out.write(`  full log: berth logs ${printable(host)} --build${revision === null ? '' : ` --revision ${num(revision)}`}\n`);
}

/** A flag that becomes an upload field: refused here, in the control plane's words, when the control plane would refuse it. */
function checkField(flag: string, field: ImageTextField, value: string | undefined): void {
  const problem = value === undefined ? null : fieldProblem(field, value);
  if (problem !== null) throw new UsageError(`--${flag} "${value!.slice(0, 80)}" ${problem}`);
}

function defaultName(host: string, dir: string): string {
  const fromHost = host.toLowerCase().split('.')[0].replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  const fromDir = basename(resolve(dir)).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  return (fromHost || fromDir || 'app').slice(0, 63);
}

function dim(out: NodeJS.WriteStream, s: string): string {
  return paint(out, 'dim', `(${s})`);
}

/** A multipart/form-data body with a known length: the fields, then the archive streamed from disk. */
/** "300", "90s", "5m", "1h" → seconds within [min, max], or a UsageError naming the flag. */
function seconds(value: string, flag: string, min: number, max: number): number {
  const m = /^(\d{1,7})(s|m|h)?$/.exec(value.trim());
  const n = m ? Number(m[1]) * (m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1) : NaN;
  if (!(n >= min && n <= max)) throw new UsageError(`--${flag} must be a duration from ${min}s to ${max / 3600}h, like 300, 90s or 5m (got "${value}")`);
  return n;
}

function multipart(fields: Record<string, string>, file: string, size: number, onProgress: (sent: number) => void) {
  const boundary = `----berth${randomBytes(12).toString('hex')}`;
  const esc = (s: string) => s.replace(/["\r\n]/g, '_');
  let head = '';
  for (const [k, v] of Object.entries(fields)) head += `--${boundary}\r\ncontent-disposition: form-data; name="${esc(k)}"\r\n\r\n${v}\r\n`;
  head += `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="source.tar.gz"\r\ncontent-type: application/gzip\r\n\r\n`;
  const headBuf = Buffer.from(head, 'utf8');
  const tailBuf = Buffer.from(`\r\n--${boundary}--\r\n`, 'utf8');
  async function* stream() {
    yield headBuf;
    let sent = 0;
    for await (const chunk of createReadStream(file, { highWaterMark: 64 * 1024 }) as AsyncIterable<Buffer>) {
      sent += chunk.length;
      onProgress(sent);
      yield chunk;
    }
    yield tailBuf;
  }
  return { boundary, length: headBuf.length + size + tailBuf.length, stream: Readable.from(stream(), { objectMode: false }) };
}

/**
 * Stream the build log until the build ends (following it again when the stream breaks, without
 * repeating what was shown); returns its status and the log's last lines. Each line goes to
 * `write`, by default to `out` under the deploy's bar.
 */
export async function followBuild(client: BerthClient, imageId: number, out: NodeJS.WriteStream, signal: AbortSignal, deadline: number,
  write?: (line: string) => void): Promise<{ status: string; tail: string[] }> {
  const tail: string[] = [];
  let partial = '';
  const bar = paint(out, 'dim', '│');
  const show = write ?? ((line: string) => out.write(`  ${bar} ${terminalSafe(out, line)}\n`));
  const take = (text: string) => {
    partial += text;
    let i: number;
    while ((i = partial.indexOf('\n')) !== -1) {
      const line = partial.slice(0, i).replace(/\r$/, '');
      partial = partial.slice(i + 1);
      show(line);
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
    }
    if (partial.length > MAX_LINE) throw new ClientError(`the build log of image ${imageId} has a line longer than ${MAX_LINE / 1024 / 1024} MiB; stopped following it (see GET /api/images/${imageId}/build-logs)`, EXIT.failed);
  };
  let status: string | undefined;
  let seen = 0;
  for (let attempt = 0; status === undefined; attempt++) {
    if (Date.now() > deadline) throw new ClientError(`the build of image ${imageId} did not finish in time (--timeout)`, EXIT.failed);
    const ac = new AbortController();
    const stop = () => ac.abort();
    signal.addEventListener('abort', stop, { once: true });
    const timer = setTimeout(stop, Math.max(1, deadline - Date.now()));
    try {
      const res = await client.stream('GET', `/api/images/${imageId}/build-logs`, { query: { follow: 1 }, signal: ac.signal, headers: { accept: 'text/event-stream' } });
      let offset = 0;
      for await (const ev of readSse(res.body)) {
        if (ev.event === 'log') {
          // after a reconnect the whole log comes again: skip what was shown
          const text = String((JSON.parse(ev.data) as { text: unknown }).text ?? '');
          const fresh = offset + text.length <= seen ? '' : text.slice(Math.max(0, seen - offset));
          offset += text.length;
          if (fresh) { seen += fresh.length; take(fresh); }
        } else if (ev.event === 'end') {
          status = (JSON.parse(ev.data) as { status: string }).status;
          break;
        }
      }
    } catch (e) {
      if (signal.aborted) throw e;
      if (!(e instanceof Error && (e.name === 'AbortError' || (e as NodeJS.ErrnoException).code === 'UND_ERR_SOCKET'))) throw e;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', stop);
    }
    if (status === undefined) {
      // the stream ended without `end` (control plane restarted): ask, and follow again if still building
      const img = await client.get<Image>(`/api/images/${imageId}`, { signal });
      if (img.status !== 'building') status = img.status;
      else await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** attempt)));
    }
  }
  if (partial) take('\n');
  return { status, tail };
}

/** Exits at start before the deploy gives up on a revision (as Cloud Run fails a revision whose container exits at start). */
const CRASHES_AT_START = 3;
/** Lines of a crashed instance's output shown with the error. */
const CRASH_OUTPUT_LINES = 20;
/** How the control plane appends an instance's last lines to its status_reason (containers/service.ts lastOutputNote). */
const OUTPUT_NOTE = '; its last output: ';
/** The status_reason of an instance the control plane is deleting (containers/service.ts DELETING). */
const BEING_DELETED = 'being deleted';

/** What a health check refused on the container's port says to a person: listen on $PORT. */
function portHint(c: Container): string {
  // (refused by the container's address; reset or closed at once through its published port)
  return c.status === 'running' && c.internal_port != null && /ECONNREFUSED|ECONNRESET|socket hang up|closed at once/.test(c.status_reason ?? '')
    ? ` — nothing listens on port ${num(c.internal_port)} in the container: the app must listen on $PORT (${num(c.internal_port)}), or deploy with --port N`
    : '';
}

/** The last lines the container printed (its Docker container's, until the next replacement removes it); [] when unreadable. */
async function lastOutput(client: BerthClient, id: number, signal: AbortSignal): Promise<string[]> {
  try {
    // (bounded in time and size: a control plane that stalls or floods cannot hold the deploy)
    const res = await client.stream('GET', `/api/containers/${id}/logs`, { query: { tail: CRASH_OUTPUT_LINES }, signal: AbortSignal.any([signal, AbortSignal.timeout(10_000)]) });
    res.body.setEncoding('utf8');
    let text = '';
    for await (const chunk of res.body) {
      text += chunk as string;
      if (text.length > 64 * 1024) { res.body.destroy(); break; }
    }
    return text.split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l !== '').slice(-CRASH_OUTPUT_LINES);
  } catch (e) {
    if (signal.aborted) throw e;
    return [];
  }
}

/**
 * Until `want` instances are healthy (or the revision is done otherwise: see below). Returns null,
 * or — when some are healthy and the rest cannot be made now (the container quota) — how many
 * are and why: the revision serves with them, and waiting out --timeout would say nothing more;
 * or `superseded` for one proven outside the split that a newer deploy replaced before it was.
 */
async function waitHealthy(client: BerthClient, imageId: number, want: number, deadline: number, out: NodeJS.WriteStream, signal: AbortSignal, host: string, aside = false): Promise<{ superseded: true } | { superseded: false; healthy: number; blocked: string } | null> {
  const s = new Status(out);
  let last: Container[] = [];
  let crashed: Container | undefined;
  let failure: string | undefined;
  let superseded = false;
  let blocked: string | null = null;
  let portSeen = '';
  try {
    for (;;) {
      last = (await client.get<{ containers: Container[] }>(`/api/images/${imageId}/containers`, { signal })).containers;
      portSeen = last.map(portHint).find((h) => h !== '') ?? portSeen;
      const healthy = last.filter((c) => c.status === 'running' && c.health === 'healthy').length;
      if (healthy >= want) { s.clear(); return null; }
      // some healthy, none on its way, and the quota keeps the rest from being made
      if (healthy > 0 && last.every((c) => c.desired === 'stopped' || (c.status === 'running' && c.health === 'healthy'))) {
        const short = (await client.get<Image>(`/api/images/${imageId}`, { signal })).start_blocked ?? null;
        if (short !== null) { s.clear(); return { superseded: false, healthy, blocked: short }; }
      }
      // an instance that never became healthy, started twice again, and down a third time (it
      // exits, or Docker cannot start it): waiting out --timeout shows nothing more. Seen while it
      // is down, so its output is still there (a replacement removes that Docker container; the
      // wait before each grows, and an instance that may fail a third time is polled more often).
      // One that came up on its third start is left to become healthy.
      // (one being deleted is the control plane's doing: its verdict, below, says why)
      const looping = healthy === 0 ? last.find((c) => c.healthy_at == null && Number(c.restart_count ?? 0) >= CRASHES_AT_START - 1 && c.status_reason !== BEING_DELETED) : undefined;
      if (looping !== undefined && (looping.status === 'exited' || looping.status === 'failed')) { crashed = looping; break; }
      if (healthy === 0) {
        // the control plane gave the revision up (apps/start-failure.ts): its instances are going
        const img = await client.get<Image>(`/api/images/${imageId}`, { signal });
        if (img.start_failure) { failure = img.start_failure; break; }
        // none of its instances can be made now (the container quota is full): said while waiting
        blocked = img.start_blocked ?? null;
        // a later deploy (or a traffic change) took its place before it served: it runs nothing now
        const app = await client.get<App>(`/api/apps/${encodeURIComponent(host)}`, { signal }).catch(() => undefined);
        // (the app deleted meanwhile: its revisions serve nothing, and none took this one's place)
        if (app?.deleting_at) throw new ClientError(`image ${imageId} of ${printable(host)} is gone: its app was deleted while it deployed`, EXIT.failed);
        const mine = app?.revisions?.find((r) => r.image_id === imageId);
        // (given up on between the two reads: that is why it serves nothing)
        if (mine?.start_failure) { failure = mine.start_failure; break; }
        // (one proven outside the split runs nothing once it was healthy: done, not superseded)
        if (mine?.serving === false && aside && mine.served === true) { s.clear(); return null; }
        // (one a newer deploy superseded before it was proven would have had no share anyway: said, not a failure)
        if (mine?.serving === false && aside) { s.clear(); return { superseded: true }; }
        if (mine?.serving === false) { superseded = true; break; }
      }
      const failing = last.filter((c) => c.status === 'failed' || c.status === 'exited' || c.health === 'unhealthy');
      const why = failing.length ? ` (${failing.length} failing: ${printable(failing[0].status_reason ?? failing[0].status)}${portHint(failing[0])})`
        : blocked !== null ? ` (${/ instances can run;/.test(blocked) ? '' : 'none can start now: '}${printable(blocked)})` : '';
      s.set(`Starting instances: ${healthy}/${want} healthy${why}`);
      if (Date.now() > deadline) break;
      await wait(looping !== undefined ? 200 : 500, undefined, { signal });
    }
  } finally {
    s.clear();
  }
  // (its instances go with it: `berth apps HOST` keeps the reason and the last output)
  const givenUp = `The revision takes no traffic, and the control plane gives it up (its instances are stopped): fix the app and deploy again. \`berth apps ${host}\` keeps why.`;
  const shown = (lines: string[]) => `Its last output:\n${lines.map((l) => `  | ${printable(l)}`).join('\n')}\n`;
  if (superseded) {
    throw new ClientError(`image ${imageId} built, but a later deploy or traffic change took its place before it served: it takes no traffic and runs nothing. See \`berth apps ${host}\`.`, EXIT.failed);
  }
  if (failure !== undefined) {
    // given up by the control plane (apps/start-failure.ts): its reason, its output as a note
    const at = failure.indexOf(OUTPUT_NOTE);
    const [why, lines] = at >= 0 ? [failure.slice(0, at), failure.slice(at + OUTPUT_NOTE.length).split(' ⏎ ')] : [failure, []];
    const exits = /times at start$/.test(why) && /exited|out of memory/.test(why);
    // (none could be made: the app is not at fault)
    const next = /^no instance could be started/.test(why)
      ? `The revision takes no traffic: make room (\`berth containers\` lists yours, \`berth containers stop ID\` stops one, \`berth delete HOST\` removes an app), then deploy again.` : givenUp;
    // (the wrong-port hint shown while waiting stays in the verdict at the start deadline)
    const hint = /^no instance became healthy/.test(why) ? portSeen : '';
    throw new ClientError(`image ${imageId} built, but ${exits ? 'its instance exits at start' : 'it could not start'} (${printable(why)}${hint}). ${lines.length ? shown(lines) : ''}${next}`, EXIT.failed);
  }
  if (crashed) {
    // one that exited as Docker started it is removed at once: the control plane keeps its last
    // lines in the reason (`; its last output: a ⏎ b`); one that exited later is read from Docker
    let reason = String(crashed.status_reason ?? crashed.status);
    const at = reason.indexOf(OUTPUT_NOTE);
    let lines: string[];
    if (at >= 0) {
      lines = reason.slice(at + OUTPUT_NOTE.length).split(' ⏎ ');
      reason = reason.slice(0, at);
    } else {
      lines = crashed.status === 'exited' ? await lastOutput(client, crashed.id, signal) : [];
    }
    const exits = crashed.status === 'exited' || /exited at once/.test(reason);
    const output = lines.length ? shown(lines) : exits ? 'It printed nothing.\n' : '';
    // (Docker's own trouble starting it is not the app's: the control plane keeps trying)
    const next = exits ? givenUp : `The revision takes no traffic until an instance is healthy, and berth keeps starting it (waiting longer each time). See \`berth logs ${host}\`.`;
    throw new ClientError(`image ${imageId} built, but its instance ${exits ? 'exits at start' : 'cannot be started'} (${printable(reason)}, ${num(Number(crashed.restart_count ?? 0) + 1)} times at start). ${output}${next}`, EXIT.failed);
  }
  // the reasons quote Docker and the app: printable before they become the error message
  const summary = [
    ...last.map((c) => `container ${c.id}: ${c.status}/${c.health}${c.status_reason ? ` (${c.status_reason})` : ''}${portHint(c)}`),
    ...(blocked !== null ? [`none can start now: ${blocked} (the control plane gives the revision up at its start deadline)`] : []),
  ].map(printable).join('; ') || 'no containers yet';
  throw new ClientError(`image ${imageId} built, but its instances did not become healthy in time: ${summary}. See \`berth logs ${host}\`.`, EXIT.failed);
}

/** Is this revision started once to prove it can serve before it takes the traffic, or given up on already (GET /api/apps/:host)? */
async function proving(client: BerthClient, host: string, imageId: number, signal: AbortSignal): Promise<boolean> {
  try {
    const app = await client.get<App>(`/api/apps/${encodeURIComponent(host)}`, { signal });
    const mine = app.revisions?.find((r) => r.image_id === imageId);
    return mine?.proving === true || (mine?.start_failure ?? null) !== null;
  } catch (e) {
    if (e instanceof ClientError && e.api?.status === 404) return false; // an API without revisions
    throw e;
  }
}

/** With revisions (GET /api/apps/:host): wait until the new revision serves (unless --no-traffic). */
async function waitTraffic(client: BerthClient, host: string, imageId: number, noTraffic: boolean, deadline: number, signal: AbortSignal): Promise<App | undefined> {
  const limit = Math.min(deadline, Date.now() + 60_000);
  for (;;) {
    let app: App;
    try {
      app = await client.get<App>(`/api/apps/${encodeURIComponent(host)}`, { signal });
    } catch (e) {
      if (e instanceof ClientError && e.api?.status === 404) return undefined; // an API without revisions
      throw e;
    }
    const mine = app.revisions?.find((r) => r.image_id === imageId);
    if (!mine || noTraffic || mine.traffic_percent > 0 || Date.now() > limit) return app;
    await wait(300, undefined, { signal });
  }
}

/**
 * Until every live proxy reports the control plane's current table (GET /v1/proxies, a user sees
 * their own routes and endpoints), has the revision's route (`img-ID`, when it is routed at all)
 * and lists one of `ports` among its endpoints when given.
 * Proxies report right after applying a table, so this is usually one round trip. Returns how many
 * proxies there are (undefined when the API cannot say); never fails the deploy.
 */
async function waitPropagated(client: BerthClient, routeId: string | undefined, ports: number[], signal: AbortSignal): Promise<number | undefined> {
  const end = Date.now() + 15_000;
  for (;;) {
    let r: { current_version: number | null; proxies: { table_version: number | null; routes: { id: string }[]; endpoints: { address: string }[] }[] };
    try {
      r = await client.get('/v1/proxies', { signal });
    } catch (e) {
      if (signal.aborted) throw e;
      return undefined;
    }
    const done = r.proxies.every((p) => (r.current_version === null || (p.table_version !== null && p.table_version >= r.current_version))
      && (routeId === undefined || p.routes.some((x) => x.id === routeId))
      && (ports.length === 0 || p.endpoints.some((e) => ports.some((port) => e.address.endsWith(`:${port}`)))));
    if (done || Date.now() > end) return r.proxies.length;
    await wait(100, undefined, { signal });
  }
}
