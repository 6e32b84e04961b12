import { didYouMean } from './suggest.js';

/** Minimal flag parsing shared by every berth subcommand: flags > BERTH_* env > defaults. */
export interface ParsedArgs {
  /** each flag's last value */
  flags: Map<string, string | true>;
  /** every value of each flag, in order (for repeatable flags; others may appear once) */
  lists: Map<string, (string | true)[]>;
  positional: string[];
}

export function parseArgs(argv: string[]): ParsedArgs {
  const flags = new Map<string, string | true>();
  const lists = new Map<string, (string | true)[]>();
  const positional: string[] = [];
  const set = (name: string, value: string | true) => {
    flags.set(name, value);
    const l = lists.get(name);
    if (l) l.push(value);
    else lists.set(name, [value]);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h') { set('help', true); continue; }
    if (!a.startsWith('--')) { positional.push(a); continue; }
    const eq = a.indexOf('=');
    if (eq !== -1) { set(a.slice(2, eq), a.slice(eq + 1)); continue; }
    const name = a.slice(2);
    const next = argv[i + 1];
    if (next !== undefined && !next.startsWith('--')) { set(name, next); i++; } else set(name, true);
  }
  return { flags, lists, positional };
}

export class UsageError extends Error {}

/**
 * The one line a CLI prints for an error that is not a usage error: a system error as
 * `path: CODE (message)`, data that is not JSON as such, anything else by its message. The stack
 * only with BERTH_DEBUG=1 (a user is not shown Node internals for a full disk or a bad reply).
 */
export function describeError(e: unknown): string {
  if (process.env.BERTH_DEBUG === '1' && e instanceof Error && e.stack) return e.stack;
  if (!(e instanceof Error)) return String(e);
  const sys = e as NodeJS.ErrnoException;
  if (typeof sys.code === 'string' && typeof sys.syscall === 'string') return `${sys.path ?? sys.syscall}: ${sys.code} (${e.message})`;
  if (e instanceof SyntaxError) return `the server sent data that is not valid JSON (${e.message})`;
  return e.message;
}

export interface OptionSpec {
  /** flag name without dashes, e.g. "listen" */
  name: string;
  /** environment variable consulted when the flag is absent, e.g. BERTH_PROXY_LISTEN */
  env?: string;
  default?: string;
  boolean?: boolean;
  /** may be given several times (`--env A=1 --env B=2`): read them with listOption */
  repeatable?: boolean;
  help: string;
}

export function resolveOptions(args: ParsedArgs, specs: OptionSpec[], env = process.env): Record<string, string | undefined> {
  const known = new Set(specs.map((s) => s.name).concat('help'));
  for (const k of args.flags.keys()) if (!known.has(k)) throw new UsageError(`unknown flag --${k}${didYouMean(k, [...known], '--')}`);
  const out: Record<string, string | undefined> = {};
  for (const s of specs) {
    const f = args.flags.get(s.name);
    // a flag given twice: the last one wins (scripts append overrides), unless it is repeatable
    if (s.repeatable && (args.lists.get(s.name) ?? []).some((v) => v === true)) throw new UsageError(`--${s.name} needs a value`);
    if (f === true && !s.boolean) throw new UsageError(`--${s.name} needs a value`);
    if (f !== undefined) out[s.name] = f === true ? 'true' : f;
    else if (s.env && env[s.env] !== undefined && env[s.env] !== '') out[s.name] = env[s.env];
    else out[s.name] = s.default;
  }
  return out;
}

/** Every value of a repeatable flag, in order ([] when absent). */
export function listOption(args: ParsedArgs, name: string): string[] {
  return (args.lists.get(name) ?? []).filter((v): v is string => v !== true);
}

export function formatHelp(usage: string, description: string, specs: OptionSpec[]): string {
  const lines = [`Usage: ${usage}`, '', description, '', 'Options:'];
  for (const s of specs) {
    const flag = `  --${s.name}${s.boolean ? '' : ' VALUE'}${s.repeatable ? ' …' : ''}`;
    const extra = [s.env ? `env ${s.env}` : '', s.default !== undefined ? `default ${s.default}` : ''].filter(Boolean).join(', ');
    lines.push(`${flag.padEnd(28)} ${s.help}${extra ? ` (${extra})` : ''}`);
  }
  lines.push(`  ${'--help'.padEnd(26)} show this help`);
  return lines.join('\n') + '\n';
}

/** "HOST:PORT" or ":PORT" or "PORT" → {host, port}. */
export function parseListen(value: string, flag: string): { host: string; port: number } {
  let host = '0.0.0.0';
  let portStr = value;
  if (value.startsWith('[')) {
    const close = value.indexOf(']');
    host = value.slice(1, close);
    portStr = value.slice(close + 2);
  } else if (value.includes(':')) {
    const i = value.lastIndexOf(':');
    host = value.slice(0, i) || '0.0.0.0';
    portStr = value.slice(i + 1);
  }
  const port = Number(portStr);
  if (!/^\d+$/.test(portStr) || port < 0 || port > 65535) throw new UsageError(`--${flag} "${value}" must be HOST:PORT`);
  return { host, port };
}
