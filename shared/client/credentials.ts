import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where `berth login` keeps its tokens: one JSON file in the user's config directory
 * (`$BERTH_CONFIG_DIR`, else `$XDG_CONFIG_HOME/berth`, else `~/.config/berth`), mode 0600 in a 0700
 * directory, written atomically (a temp file with a random name, created exclusively so it never
 * follows a planted symlink, then renamed). Reading warns once when the directory or the file can
 * be read or changed by other users. Tokens are stored per API URL, so one machine
 * can be logged in to several control planes; `current` is the API the last `berth login` chose.
 * A missing file is "no logins"; a file that is there but cannot be used (unreadable, not JSON,
 * not this shape) is a `CredentialsFileError`, never read as "no logins" and silently overwritten.
 */
export interface StoredLogin {
  token: string;
  /** id of the API token `berth login` created (revoked by `berth logout`); absent for `--token` logins */
  token_id?: number;
  email?: string;
  created_at: string;
}

export interface CredentialsFile {
  current?: string;
  apis: Record<string, StoredLogin>;
  /**
   * The control plane's device cookie per API URL, from the last sign-in there (`berth_device`, an
   * opaque value): sent with the next `berth login`, it tells the control plane this machine signed
   * in before, so a guessing attack on the account from elsewhere does not lock it out. Kept
   * across `berth logout`, as a browser keeps it.
   */
  devices?: Record<string, string>;
}

/** A device cookie value as the control plane makes them (anything else is neither kept nor sent). */
export const DEVICE_VALUE = /^[A-Za-z0-9._-]{1,200}$/;

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BERTH_CONFIG_DIR) return env.BERTH_CONFIG_DIR;
  if (env.XDG_CONFIG_HOME) return join(env.XDG_CONFIG_HOME, 'berth');
  return join(homedir(), '.config', 'berth');
}

export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(configDir(env), 'credentials.json');
}

/** The credentials file is there but cannot be used; the message names the file, what is wrong and what to do. */
export class CredentialsFileError extends Error {
  constructor(readonly path: string, readonly problem: string) {
    super(`${path} ${problem}; fix or delete it, or run \`berth login\` (which replaces it)`);
    this.name = 'CredentialsFileError';
  }
}

/** The stored logins; a missing file is "no logins", any other problem a CredentialsFileError. */
export async function readCredentials(env: NodeJS.ProcessEnv = process.env, warn: (message: string) => void = warnOnce): Promise<CredentialsFile> {
  await checkPrivate(env, warn);
  const path = credentialsPath(env);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { apis: {} };
    throw new CredentialsFileError(path, `cannot be read (${code ?? (e as Error).message})`);
  }
  if (text.trim() === '') throw new CredentialsFileError(path, 'is empty');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new CredentialsFileError(path, `is not valid JSON: ${syntaxProblem(e as Error, text)}`);
  }
  return checkShape(path, parsed);
}

/**
 * What JSON.parse found wrong and where (line and column), without quoting the file: V8's message
 * can quote it, and it holds tokens.
 */
function syntaxProblem(e: Error, text: string): string {
  if (/end of JSON input/i.test(e.message)) return 'it ends too early (cut off?)';
  const m = /^(.+?)(?: in JSON)? at position (\d+)/.exec(e.message);
  const what = m ? m[1].replace(/^\w/, (c) => c.toLowerCase()) : 'unexpected character';
  const at = m ? Number(m[2]) : undefined;
  if (at === undefined) return what;
  const before = text.slice(0, at).split('\n');
  return `${what} at line ${before.length} column ${before[before.length - 1].length + 1}`;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The shape `writeCredentials` writes: `{ current?, apis: { [url]: { token, … } } }`. */
function checkShape(path: string, parsed: unknown): CredentialsFile {
  const bad = (what: string) => new CredentialsFileError(path, `is not a berth credentials file (${what})`);
  if (!isObject(parsed)) throw bad('not a JSON object');
  if (!isObject(parsed.apis)) throw bad('"apis" is missing or not an object');
  if (parsed.current !== undefined && typeof parsed.current !== 'string') throw bad('"current" is not a string');
  // (optional: entries that are not a device cookie value are dropped, never the file's logins)
  const devices: Record<string, string> = {};
  if (isObject(parsed.devices)) for (const [api, d] of Object.entries(parsed.devices)) if (typeof d === 'string' && DEVICE_VALUE.test(d)) devices[api] = d;
  const apis: Record<string, StoredLogin> = {};
  for (const [api, login] of Object.entries(parsed.apis)) {
    if (!isObject(login) || typeof login.token !== 'string' || login.token === '') throw bad(`the login for ${JSON.stringify(api)} has no "token" string`);
    apis[api] = login as unknown as StoredLogin;
    // a file written before the `devices` map kept the cookie in the login (`device`): still sent
    if (devices[api] === undefined && typeof login.device === 'string' && DEVICE_VALUE.test(login.device)) devices[api] = login.device;
  }
  return { current: parsed.current, apis, ...(Object.keys(devices).length === 0 ? {} : { devices }) };
}

export async function writeCredentials(file: CredentialsFile, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const dir = configDir(env);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = credentialsPath(env);
  const tmp = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', 0o600); // O_EXCL: a file or symlink already there is an error, not followed
  try {
    try {
      await fh.writeFile(JSON.stringify(file, null, 2) + '\n');
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return path;
}

/**
 * Store `login` for `api` and make it current. A file that cannot be used is replaced by one with
 * this login only: `replaced` then says what was wrong with it, for the caller to tell the user.
 */
export async function saveLogin(api: string, login: StoredLogin, env: NodeJS.ProcessEnv = process.env, device?: string): Promise<{ path: string; replaced?: string }> {
  let file: CredentialsFile;
  let replaced: string | undefined;
  try {
    file = await readCredentials(env);
  } catch (e) {
    if (!(e instanceof CredentialsFileError)) throw e;
    file = { apis: {} };
    replaced = e.problem;
  }
  file.apis[api] = login;
  file.current = api;
  if (device !== undefined) file.devices = { ...file.devices, [api]: device };
  return { path: await writeCredentials(file, env), ...(replaced === undefined ? {} : { replaced }) };
}

/** Forget the login for `api`; returns what was stored (to revoke it), if anything. Throws a CredentialsFileError for a file that cannot be used. */
export async function forgetLogin(api: string, env: NodeJS.ProcessEnv = process.env): Promise<StoredLogin | undefined> {
  const file = await readCredentials(env);
  const old = file.apis[api];
  if (!old) return undefined;
  delete file.apis[api];
  if (file.current === api) file.current = Object.keys(file.apis)[0];
  if (Object.keys(file.apis).length === 0 && Object.keys(file.devices ?? {}).length === 0) await rm(credentialsPath(env), { force: true });
  else await writeCredentials(file, env);
  return old;
}

let warned = false;
function warnOnce(message: string): void {
  if (warned) return;
  warned = true;
  process.stderr.write(`berth: warning: ${message}\n`);
}

/** Warns when the config directory or the credentials file is open to other users (group/world bits). */
async function checkPrivate(env: NodeJS.ProcessEnv, warn: (message: string) => void): Promise<void> {
  for (const [path, want] of [[configDir(env), '700'], [credentialsPath(env), '600']] as const) {
    const mode = await stat(path).then((s) => s.mode & 0o777, () => undefined);
    if (mode !== undefined && mode & 0o077) {
      warn(`${path} is open to other users (mode ${mode.toString(8).padStart(4, '0')}); your API tokens are in it: chmod ${want} ${path}`);
      return;
    }
  }
}
