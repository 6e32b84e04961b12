import { hostname } from 'node:os';
import { UsageError } from '../../cli/args.js';
import { BerthClient, ClientError, EXIT } from '../client.js';
import { defineClientCommand } from '../command.js';
import { DEVICE_COOKIE, setCookieName } from '../../session-cookie.js';
import { credentialsPath, DEVICE_VALUE, forgetLogin, readCredentials, saveLogin } from '../credentials.js';
import { printJson } from '../output.js';
import { Prompter } from '../prompt.js';
import { printable } from '../style.js';

interface User { id: number; email: string; username?: string | null }

/** The device cookie a sign-in answer set, if any. */
function deviceFrom(setCookie: string | string[] | undefined): string | undefined {
  for (const c of Array.isArray(setCookie) ? setCookie : setCookie === undefined ? [] : [setCookie]) {
    if (setCookieName(c) !== DEVICE_COOKIE) continue;
    const v = c.slice(c.indexOf('=') + 1).split(';', 1)[0].trim();
    return DEVICE_VALUE.test(v) ? v : undefined;
  }
  return undefined;
}

/**
 * `berth login`: signs in with email + password (asked on a terminal, read from stdin when piped),
 * creates an API token named after this machine, ends the password session, and stores the API
 * token for this API URL (shared/client/credentials.ts, mode 0600). `--token T` stores a token
 * made elsewhere after checking it with GET /api/auth/me.
 */
export const run = defineClientCommand({
  usage: 'berth login [--api URL] [--email E | --token T]',
  description: `Sign in to a berth control plane and remember it for the other commands.
Asks for the email and password (on a terminal; when stdin is piped, reads them as two lines —
or only the password when --email is given). The credentials file is per API URL, mode 0600:
${credentialsPath()} (BERTH_CONFIG_DIR moves it).`,
  options: [
    { name: 'email', help: 'account email (asked when absent)' },
    { name: 'token', help: 'store this API token instead of signing in with a password' },
  ],
  async run({ opts, client, json, stdout, stderr }) {
    const api = client.api;
    if (opts.token !== undefined) {
      if (opts.email !== undefined) throw new UsageError('--token and --email exclude each other');
      if (!/^[\x21-\x7e]{8,4096}$/.test(opts.token)) throw new UsageError('--token does not look like a token');
      const probe = new BerthClient(api, opts.token, 'env');
      try {
        const me = await probe.get<{ user: User }>('/api/auth/me').catch((e: unknown) => {
          if (e instanceof ClientError && e.exitCode === EXIT.auth) throw new ClientError(`the API at ${api} does not accept this token`, EXIT.auth);
          throw e;
        });
        return done(me.user, await saveLogin(api, { token: opts.token, email: me.user.email, created_at: new Date().toISOString() }));
      } finally {
        await probe.close();
      }
    }

    const prompter = new Prompter();
    let email = opts.email;
    let password: string | undefined;
    try {
      email ??= (await prompter.ask(`Email for ${api}: `))?.trim();
      if (!email) throw new UsageError('no email given');
      password = await prompter.askSecret('Password: ');
      if (!password) throw new UsageError('no password given');
    } finally {
      prompter.close();
    }

    const anon = new BerthClient(api, undefined, 'none');
    let session: string;
    let user: User;
    // this machine's device cookie from its last sign-in here, sent back (shared/client/credentials.ts)
    const before = await readCredentials().then((f) => f.devices?.[api], () => undefined);
    let device: string | undefined;
    try {
      const res = await anon.exchange<{ token: string; user: User }>('POST', '/api/auth/login', {
        json: { email, password }, anonymous: true, headers: before !== undefined ? { cookie: `${DEVICE_COOKIE}=${before}` } : {},
      }).catch((e: unknown) => {
        if (e instanceof ClientError && e.api?.status === 401) throw new ClientError(`wrong email or password for ${api}`, EXIT.auth, e.api);
        throw e;
      });
      if (typeof res.body?.token !== 'string' || typeof res.body.user !== 'object' || res.body.user === null) {
        throw new ClientError(`the API at ${api} answered POST /api/auth/login without a token (is ${api} a berth control plane?)`);
      }
      ({ token: session, user } = res.body);
      device = deviceFrom(res.headers['set-cookie']);
    } finally {
      await anon.close();
    }
    const s = new BerthClient(api, session, 'env');
    try {
      const name = `berth-cli ${hostname()}`.slice(0, 100);
      const t = await s.post<{ id: number; token: string }>('/api/auth/tokens', { name });
      await s.post('/api/auth/logout').catch(() => { /* the session expires on its own */ });
      return done(user, await saveLogin(api, { token: t.token, token_id: t.id, email: user.email, created_at: new Date().toISOString() }, process.env, device));
    } finally {
      await s.close();
    }

    function done(u: User, { path, replaced }: { path: string; replaced?: string }): number {
      // the old file could not be used (not JSON, not ours): say so, since the logins it held are gone
      if (replaced !== undefined) stderr.write(`berth login: warning: ${path} ${replaced}; replaced it with a new file holding this login only\n`);
      if (json) printJson({ api, user: u, credentials: path, ...(replaced === undefined ? {} : { replaced_unreadable_file: replaced }) });
      else {
        stdout.write(`Logged in to ${api} as ${printable(u.email)}.\n`);
        stderr.write(`(token stored in ${path})\n`);
      }
      return EXIT.ok;
    }
  },
});

/** `berth logout`: revokes the stored API token (best effort) and forgets it. */
export const runLogout = defineClientCommand({
  usage: 'berth logout [--api URL]',
  description: 'Forget the login stored for the API (and revoke its API token there, when it answers).',
  options: [],
  async run({ client, json, stdout, stderr }) {
    const api = client.api;
    const old = await forgetLogin(api);
    if (!old) {
      if (json) printJson({ api, logged_out: false });
      else stdout.write(`Not logged in to ${api}; nothing to do.\n`);
      return EXIT.ok;
    }
    let revoked = false;
    if (old.token_id) {
      const c = new BerthClient(api, old.token, 'login');
      try {
        await c.delete(`/api/auth/tokens/${old.token_id}`);
        revoked = true;
      } catch (e) {
        stderr.write(`warning: could not revoke the token at ${api} (${(e as Error).message.split('\n')[0]}); it was forgotten here only.\n`);
      } finally {
        await c.close();
      }
    }
    if (json) printJson({ api, logged_out: true, token_revoked: revoked });
    else stdout.write(`Logged out of ${api}.\n`);
    return EXIT.ok;
  },
});
