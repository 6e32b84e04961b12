import { UsageError } from '../../cli/args.js';
import { ClientError, EXIT, type BerthClient } from '../client.js';
import { followBuild } from './deploy.js';
import { appHostArg, booleanOption, defineClientCommand, intOption } from '../command.js';
import { readSse } from '../sse.js';
import { jsonText } from '../output.js';
import { colours, num, printable, terminalSafe } from '../style.js';

/**
 * `berth logs HOST`: every instance's stdout/stderr through GET /api/apps/:host/logs (SSE), each
 * line prefixed by its container; `--follow` keeps streaming (new instances join) until Ctrl-C.
 * `--json` prints one JSON object per line (NDJSON).
 */
export const run = defineClientCommand({
  usage: 'berth logs HOST [--follow] [--since 10m] [--tail N] [--container ID] [--timestamps] | --build [--revision N] [--follow]',
  description: `Print the logs of an app's instances (stdout and stderr), each line prefixed by its container id.
--follow streams new lines until interrupted, including instances that start later.
--build prints the build log of the app's newest revision (or of --revision N) instead; with
--follow, a build under way is followed until it ends.`,
  positional: { min: 1, max: 1, names: 'HOST (the app hostname)' },
  options: [
    { name: 'follow', boolean: true, help: 'keep streaming new lines (Ctrl-C to stop)' },
    { name: 'since', help: 'only lines newer than this: 10m, 2h, 30s, 1d, unix seconds or an RFC 3339 time' },
    { name: 'tail', help: 'last N lines per container (default 200, at most 10000)' },
    { name: 'container', help: 'only this instance (a container id of the app)' },
    { name: 'timestamps', boolean: true, help: "prefix each line with Docker's timestamp" },
    { name: 'build', boolean: true, help: "the build log instead (of the newest revision, or --revision's)" },
    { name: 'revision', help: 'with --build: this revision number' },
  ],
  async run({ opts, args, json, client, stdout, signal }) {
    const host = appHostArg(args[0]);
    const follow = booleanOption(opts.follow, 'follow');
    const revision = intOption(opts.revision, 'revision', 1, Number.MAX_SAFE_INTEGER);
    if (booleanOption(opts.build, 'build')) {
      for (const f of ['since', 'tail', 'container', 'timestamps'] as const) if (opts[f] !== undefined) throw new UsageError(`--${f} is for instance logs, not with --build`);
      return buildLog(client, host, revision, follow, json, stdout, signal);
    }
    if (revision !== undefined) throw new UsageError('--revision goes with --build (instance logs: --container ID)');
    const stamps = booleanOption(opts.timestamps, 'timestamps');
    const tail = intOption(opts.tail, 'tail', 0, 10_000);
    const container = intOption(opts.container, 'container', 1, Number.MAX_SAFE_INTEGER);
    if (opts.since !== undefined && !/^(\d{1,7}[smhd]|\d{1,12}(\.\d{1,9})?|\d{4}-\d\d-\d\d([T ][\d:.]+)?(Z|[+-]\d\d:?\d\d)?)$/.test(opts.since.trim())) {
      throw new UsageError(`--since "${opts.since}" must be a duration (10m, 2h, 30s, 1d), unix seconds or an RFC 3339 time`);
    }
    const colour = colours(stdout);
    const palette = [36, 33, 35, 32, 34, 91, 96, 93];
    // (the id as the server sent it, made safe: a hostile server could send a string of escapes)
    const label = (raw: unknown) => {
      const id = Number.isSafeInteger(raw) ? (raw as number) : 0;
      return colour ? `\x1b[${palette[Math.abs(id) % palette.length]}m[${num(raw)}]\x1b[39m` : `[${num(raw)}]`;
    };
    try {
      const res = await client.stream('GET', `/api/apps/${encodeURIComponent(host)}/logs`, {
        query: { follow, since: opts.since?.trim(), tail, container },
        headers: { accept: 'text/event-stream' }, signal,
      });
      let lines = 0;
      for await (const ev of readSse(res.body)) {
        if (ev.event === 'log') {
          lines++;
          const l = JSON.parse(ev.data) as { container_id: number; image_id: number; stream: string; time: string | null; line: string };
          if (json) stdout.write(jsonText(l) + '\n');
          else {
            const line = terminalSafe(stdout, l.line);
            stdout.write(`${label(l.container_id)} ${stamps && l.time ? `${printable(l.time)} ` : ''}${l.stream === 'stderr' && colour ? `\x1b[2m${line}\x1b[22m` : line}\n`);
          }
        } else if (ev.event === 'error') {
          process.stderr.write(`berth logs: ${terminalSafe(process.stderr, (JSON.parse(ev.data) as { message: string }).message)}\n`);
          return EXIT.failed;
        } else if (ev.event === 'notice') {
          process.stderr.write(`berth logs: ${terminalSafe(process.stderr, (JSON.parse(ev.data) as { message: string }).message)}\n`);
        } else if (ev.event === 'end') {
          // nothing at all: say where else to look (an app whose build failed has no instance)
          if (lines === 0 && !json && container === undefined) {
            process.stderr.write(`berth logs: no instance of ${printable(host)} printed anything${opts.since !== undefined ? ' in that time' : ''}; \`berth apps ${printable(host)}\` shows its revisions, \`berth logs ${printable(host)} --build\` the build log\n`);
          }
          return EXIT.ok;
        }
      }
    } catch (e) {
      if (signal.aborted) return EXIT.ok; // Ctrl-C while following is how one stops
      throw e;
    }
    if (signal.aborted) return EXIT.ok;
    // closed without its `end` event (the control plane stopped, or the connection broke): the
    // output may be cut short, which a script must be able to tell
    process.stderr.write('berth logs: the stream ended before the control plane said it was complete (it restarted, or the connection broke); the output may be cut short\n');
    return EXIT.failed;
  },
});

interface RevisionRef { image_id: number; revision: number; status: string }

/** How long `--build --follow` follows a build (the control plane's own build timeout is shorter). */
const BUILD_FOLLOW_MS = 6 * 3600_000;

/**
 * `--build`: the build log of a revision (GET /api/images/:id/build-logs; with --follow its SSE
 * stream, which ends with the build). The revision is found among the app's (GET /api/apps/:host).
 */
async function buildLog(client: BerthClient, host: string, revision: number | undefined, follow: boolean, json: boolean, stdout: NodeJS.WriteStream, signal: AbortSignal): Promise<number> {
  const app = await client.get<{ revisions: RevisionRef[] }>(`/api/apps/${encodeURIComponent(host)}`, { signal });
  const newest = app.revisions.reduce<RevisionRef | undefined>((a, r) => (a === undefined || r.revision > a.revision ? r : a), undefined);
  const rev = revision === undefined ? newest : app.revisions.find((r) => r.revision === revision);
  if (rev === undefined) {
    throw new ClientError(revision === undefined ? `${host} has no revisions` : `${host} has no revision ${revision} (it has ${app.revisions.map((r) => r.revision).sort((a, b) => a - b).join(', ') || 'none'})`, EXIT.failed);
  }
  if (!follow || rev.status !== 'building') {
    const b = await client.get<{ status: string; logs: unknown; truncated: boolean }>(`/api/images/${rev.image_id}/build-logs`, { signal });
    const logs = typeof b.logs === 'string' ? b.logs : '';
    if (json) stdout.write(jsonText({ app_hostname: host, revision: rev.revision, image_id: rev.image_id, status: b.status, truncated: b.truncated, logs }) + '\n');
    else {
      if (b.truncated) process.stderr.write('berth logs: the stored build log was cut to its last part\n');
      stdout.write(terminalSafe(stdout, logs));
      if (logs !== '' && !logs.endsWith('\n')) stdout.write('\n');
    }
    return b.status === 'build_failed' ? EXIT.failed : EXIT.ok;
  }
  // (deploy's follower: it follows again when the stream breaks, and shows nothing twice)
  const write = json
    ? (line: string) => stdout.write(jsonText({ revision: rev.revision, image_id: rev.image_id, line }) + '\n')
    : (line: string) => stdout.write(`${terminalSafe(stdout, line)}\n`);
  try {
    const { status } = await followBuild(client, rev.image_id, stdout, signal, Date.now() + BUILD_FOLLOW_MS, write);
    if (json) stdout.write(jsonText({ revision: rev.revision, image_id: rev.image_id, status }) + '\n');
    return status === 'build_failed' ? EXIT.failed : EXIT.ok;
  } catch (e) {
    if (signal.aborted) return EXIT.ok; // Ctrl-C while following is how one stops
    throw e;
  }
}
