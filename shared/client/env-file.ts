import { readFileSync, statSync } from 'node:fs';
import { UsageError } from '../cli/args.js';
import { envNameProblem } from '../env-vars.js';

/** Largest --env-file read (the control plane takes 64 KiB of variables in all). */
const MAX_FILE_BYTES = 1024 * 1024;

/**
 * `KEY=VALUE` → [KEY, VALUE] for `berth deploy --env`, checked by the control plane's name rule
 * (shared/env-vars.ts). The value may contain "=" and be empty.
 */
export function envAssignment(text: string, where: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UsageError(`${where}: "${text.slice(0, 80)}" is not NAME=VALUE`);
  const name = text.slice(0, eq);
  const problem = envNameProblem(name);
  if (problem) throw new UsageError(`${where}: the name "${name.slice(0, 80)}" ${problem}`);
  return [name, text.slice(eq + 1)];
}

/**
 * A dotenv file as most tools read it: `NAME=value` lines (spaces around "=" allowed), optional `export `, blank lines and
 * `#` comments skipped; a value in double quotes may use \n \r \t \" \\ escapes, one in single
 * quotes is taken as written, an unquoted one is trimmed and ends at ` #`. Multi-line values
 * are not supported (use "\n"). Errors name the file and line.
 */
export function readEnvFile(file: string): [string, string][] {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > MAX_FILE_BYTES) throw new Error(`${st.size} bytes; at most ${MAX_FILE_BYTES}`);
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
    throw new UsageError(`--env-file ${file}: ${why}`);
  }
  const out: [string, string][] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const where = `--env-file ${file}:${i + 1}`;
    const body = line.replace(/^export\s+/, '');
    const eq = body.indexOf('=');
    // spaces around "=" are allowed in a file (KEY = value), as python-dotenv and docker compose read it
    const [name] = envAssignment(eq === -1 ? body : `${body.slice(0, eq).trim()}=`, where);
    const v = body.slice(eq + 1).trim();
    let value: string;
    if (v.startsWith('"')) {
      if (v.length < 2 || !v.endsWith('"')) throw new UsageError(`${where}: the value of ${name} opens a " it does not close`);
      value = v.slice(1, -1).replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c === 't' ? '\t' : c));
    } else if (v.startsWith("'")) {
      if (v.length < 2 || !v.endsWith("'")) throw new UsageError(`${where}: the value of ${name} opens a ' it does not close`);
      value = v.slice(1, -1);
    } else {
      const hash = v.search(/\s#/);
      value = (hash === -1 ? v : v.slice(0, hash)).trim();
    }
    out.push([name, value]);
  });
  return out;
}
