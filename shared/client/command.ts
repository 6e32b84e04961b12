/**
 * `defineClientCommand` — the shape of every `berth` command that talks to a control plane
 * (deploy, apps, logs, containers, traffic, load, billing, …). It adds the common flags
 * (`--api URL`, `--json`, `--help`), parses the rest with shared/cli/args.ts, builds the
 * BerthClient (shared/client/client.ts), and turns every failure into one line for a person on
 * stderr plus an exit code (`EXIT`); with `--json` the error is also printed on stdout as
 * `{"error":{"code","message","status"}}` so scripts can parse either way.
 *
 *   export const run = defineClientCommand({
 *     usage: 'berth apps [--json]', description: 'List your apps.', options: [],
 *     async run({ client, json, out }) { … return EXIT.ok; },
 *   });
 *
 * shared/cli/main.ts dispatches `berth <name>` to a module exporting `run(argv)`.
 */
import { describeError, formatHelp, listOption, parseArgs, resolveOptions, UsageError, type OptionSpec } from '../cli/args.js';
import { BerthClient, ClientError, EXIT } from './client.js';
import { printJson } from './output.js';
import { terminalSafe } from './style.js';

export interface ClientContext {
  /** resolved flag values (flags > env > defaults), by flag name */
  opts: Record<string, string | undefined>;
  /** positional arguments */
  args: string[];
  /** every value of a repeatable option, in order */
  list(name: string): string[];
  json: boolean;
  client: BerthClient;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** aborted on SIGINT/SIGTERM: streaming commands stop and return */
  signal: AbortSignal;
}

export interface ClientCommandSpec {
  /** e.g. "berth logs HOST [--follow] [--since 10m]" */
  usage: string;
  description: string;
  options: OptionSpec[];
  /** how many positional arguments are allowed (default 0..0) */
  positional?: { min: number; max: number; names?: string };
  run(ctx: ClientContext): Promise<number | void>;
}

export const COMMON_OPTIONS: OptionSpec[] = [
  { name: 'api', env: 'BERTH_API', help: 'control-plane API URL (default: the last `berth login`, else http://127.0.0.1:3000)' },
  { name: 'json', boolean: true, help: 'machine-readable JSON on stdout' },
];

/** An app hostname argument as the API takes it (letters, digits, `.`, `-`; up to 300), else a usage error. */
export function appHostArg(host: string): string {
  // (`_` too: new apps may not have one, an older app that has one is still managed)
  if (host.length > 300 || !/^[A-Za-z0-9._-]+$/.test(host)) throw new UsageError(`"${host.slice(0, 80)}" is not an app hostname`);
  return host;
}

/** An integer flag within bounds, or a UsageError naming the flag. */
export function intOption(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`--${flag} must be an integer from ${min} to ${max} (got "${value}")`);
  }
  return Number(value);
}

export function booleanOption(value: string | undefined, flag: string): boolean {
  if (value === undefined || value === 'false' || value === '0') return false;
  if (value === 'true' || value === '1') return true;
  throw new UsageError(`--${flag} takes no value (got "${value}")`);
}

export function defineClientCommand(spec: ClientCommandSpec): (argv: string[]) => Promise<void> {
  const options = [...spec.options, ...COMMON_OPTIONS];
  return async (argv: string[]) => {
    const stdout = process.stdout;
    const stderr = process.stderr;
    // a boolean flag never takes the next word as its value (`--no-traffic ./app` means DIR ./app)
    const booleans = new Set(options.filter((o) => o.boolean).map((o) => `--${o.name}`));
    const parsed = parseArgs(argv.map((a) => (booleans.has(a) ? `${a}=true` : a)));
    if (parsed.flags.has('help')) {
      stdout.write(formatHelp(spec.usage, spec.description, options) + exitCodeHelp());
      return;
    }
    const json = parsed.flags.get('json') !== undefined && parsed.flags.get('json') !== 'false';
    let client: BerthClient | undefined;
    const ac = new AbortController();
    const onSignal = () => ac.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    let code: number = EXIT.ok;
    try {
      const opts = resolveOptions(parsed, options);
      booleanOption(opts.json, 'json');
      const { min, max } = spec.positional ?? { min: 0, max: 0 };
      if (parsed.positional.length < min) throw new UsageError(`missing ${spec.positional?.names ?? 'argument'}`);
      if (parsed.positional.length > max) throw new UsageError(`unexpected argument "${parsed.positional[max]}"`);
      client = await BerthClient.resolve({ api: opts.api });
      const list = (name: string) => listOption(parsed, name);
      code = (await spec.run({ opts, args: parsed.positional, list, json, client, stdout, stderr, signal: ac.signal })) ?? EXIT.ok;
    } catch (e) {
      code = report(e, json, spec.usage, ac.signal.aborted);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await client?.close();
    }
    await drain(stdout);
    await drain(stderr);
    process.exit(code);
  };

  function report(e: unknown, json: boolean, usage: string, aborted: boolean): number {
    const name = usage.split(' ').slice(0, 2).join(' ');
    if (aborted && (e as Error)?.name === 'AbortError') return 130;
    let code: number = EXIT.failed;
    let message: string;
    let apiCode = 'failed';
    let status: number | undefined;
    if (e instanceof UsageError) {
      code = EXIT.usage; apiCode = 'usage';
      message = `${e.message}\nRun \`${name} --help\` for usage.`;
    } else if (e instanceof ClientError) {
      code = e.exitCode;
      message = e.message;
      apiCode = e.api?.code ?? (code === EXIT.auth ? 'not_logged_in' : code === EXIT.unreachable ? 'unreachable' : code === EXIT.usage ? 'usage' : 'failed');
      status = e.api?.status;
    } else {
      message = describeError(e);
    }
    // the message may quote the server (an API error, an app's name): no escape sequences on a terminal
    process.stderr.write(`${name}: ${terminalSafe(process.stderr, message)}\n`);
    if (json) printJson({ error: { code: apiCode, message: message.split('\n')[0], ...(status ? { status } : {}) } });
    return code;
  }
}

function exitCodeHelp(): string {
  return `\nExit codes: ${EXIT.ok} ok, ${EXIT.failed} failed (the API refused, a build failed), ${EXIT.usage} usage, ${EXIT.auth} not logged in, ${EXIT.unreachable} API unreachable.\n`;
}

function drain(s: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => { if (s.writableLength === 0) resolve(); else s.write('', () => resolve()); });
}
