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
}

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BERTH_CONFIG_DIR) return env.BERTH_CONFIG_DIR;
  if (env.XDG_CONFIG_HOME) return join(env.XDG_CONFIG_HOME, 'berth');
  return join(homedir(), '.config', 'berth');
}

export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(configDir(env), 'credentials.json');
}

/** The stored logins; a missing or unreadable file is "no logins" (never an exception). */
export async function readCredentials(env: NodeJS.ProcessEnv = process.env, warn: (message: string) => void = warnOnce): Promise<CredentialsFile> {
  await checkPrivate(env, warn);
  try {
    const parsed = JSON.parse(await readFile(credentialsPath(env), 'utf8')) as Partial<CredentialsFile>;
    const apis = parsed && typeof parsed.apis === 'object' && parsed.apis ? parsed.apis : {};
    return { current: typeof parsed.current === 'string' ? parsed.current : undefined, apis };
  } catch {
    return { apis: {} };
  }
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

export async function saveLogin(api: string, login: StoredLogin, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const file = await readCredentials(env);
  file.apis[api] = login;
  file.current = api;
  return writeCredentials(file, env);
}

/** Forget the login for `api`; returns what was stored (to revoke it), if anything. */
export async function forgetLogin(api: string, env: NodeJS.ProcessEnv = process.env): Promise<StoredLogin | undefined> {
  const file = await readCredentials(env);
  const old = file.apis[api];
  if (!old) return undefined;
  delete file.apis[api];
  if (file.current === api) file.current = Object.keys(file.apis)[0];
  if (Object.keys(file.apis).length === 0) await rm(credentialsPath(env), { force: true });
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
