/**
 * shared/client/client.ts — the one HTTP client every `berth` client command uses (deploy, apps,
 * logs, containers, traffic, load, billing, …). Import it from here:
 *
 *   import { BerthClient, ClientError, EXIT } from '../shared/client/client.js';
 *   const c = await BerthClient.resolve({ api: opts.api });   // --api > BERTH_API > last login > default
 *   const { apps } = await c.get<{ apps: App[] }>('/api/apps');
 *
 * (or, simpler, write the command with `defineClientCommand` from shared/client/command.ts, which
 * adds --api/--json/--help, builds the client and turns errors into messages and exit codes).
 *
 * What it guarantees:
 * - API URL: `--api` flag > `BERTH_API` > the API of the last `berth login` > http://127.0.0.1:3000.
 *   Token: `BERTH_TOKEN` > the token stored for that API URL (shared/client/credentials.ts).
 *   A credentials file that cannot be used fails every request that needs a token (exit 1, the
 *   message naming the file and what is wrong), unless BERTH_TOKEN and the API are given without it.
 * - Errors are `ClientError`s whose message speaks to a person, with an exit code (`EXIT`):
 *   not logged in (3), API unreachable — naming the URL tried — (4), the API's own 4xx/5xx message
 *   shown with its status and code (1), bad usage (2). What the API wrote into the message is made
 *   `printable` (shared/client/style.ts) here, once, for every place that prints it.
 * - JSON in and out; `stream()` hands back the response body for SSE / chunked text (pass an
 *   AbortSignal: aborting closes the connection, which is how the API learns to stop).
 */
import { Readable } from 'node:stream';
import { isLoopbackName } from '../hostname.js';
import { Agent, request, type Dispatcher } from 'undici';
import { CredentialsFileError, readCredentials, type CredentialsFile } from './credentials.js';
import { printable } from './style.js';

export const DEFAULT_API = 'http://127.0.0.1:3000';

/** Errors that mean the API was never reached (as opposed to a connection lost midway). */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'EADDRNOTAVAIL', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE']);

/** Exit codes shared by every client command. */
export const EXIT = {
  ok: 0,
  /** the API refused (4xx/5xx), a build failed, a wait timed out */
  failed: 1,
  /** bad flags or arguments */
  usage: 2,
  /** not logged in, or the API rejected the credentials */
  auth: 3,
  /** the API could not be reached */
  unreachable: 4,
} as const;

export class ClientError extends Error {
  constructor(
    message: string,
    public readonly exitCode: number = EXIT.failed,
    /** set when the API answered with an error */
    public readonly api?: { status: number; code: string; requestId?: string },
  ) {
    super(message);
  }
}

/** The most a whole answer may be (BerthClient.readAll); streams (logs, events) are read line by line instead. */
export const MAX_ANSWER_BYTES = 64 * 1024 * 1024;
/** How long a whole answer may take to arrive once its head has. */
export const ANSWER_DEADLINE_MS = 10 * 60_000;

/** http(s)://host[:port][/prefix] without a trailing slash (a bare host: https, http on loopback); anything else is a usage error. */
export function normalizeApiUrl(raw: string): string {
  let u: URL;
  try {
    // a bare name means https, except this machine's own (a password must not cross a network in clear by default)
    u = new URL(raw.includes('://') ? raw : `http://${raw}`);
    if (!raw.includes('://') && !isLoopbackName(u.hostname)) u = new URL(`https://${raw}`);
  } catch {
    throw new ClientError(`"${raw}" is not an API URL (expected http://HOST:PORT)`, EXIT.usage);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ClientError(`"${raw}" is not an http(s) URL`, EXIT.usage);
  if (u.username || u.password || u.search || u.hash) throw new ClientError(`"${raw}": give the API URL without credentials, query or fragment`, EXIT.usage);
  return (u.origin + u.pathname).replace(/\/+$/, '');
}

export interface ResolveOptions {
  /** the --api flag, when given */
  api?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  /** JSON body */
  json?: unknown;
  /** raw body (e.g. a multipart stream); set the content-type in headers */
  body?: Dispatcher.DispatchOptions['body'];
  headers?: Record<string, string>;
  /** send no token even when there is one (login) */
  anonymous?: boolean;
  signal?: AbortSignal;
  /** ms to wait for the response headers (default 60 s; uploads wait for the whole body first) */
  timeoutMs?: number;
}

interface ApiErrorBody { error?: { code?: string; message?: string; requestId?: string } }

export class BerthClient {
  /** one keep-alive pool per client; close() releases it so a command exits at once */
  private readonly agent = new Agent({ keepAliveTimeout: 2_000, connect: { timeout: 10_000 } });

  constructor(
    public readonly api: string,
    public readonly token: string | undefined,
    /** where the token came from, to word a 401 */
    public readonly tokenSource: 'env' | 'login' | 'none' = token ? 'env' : 'none',
    /** the credentials file could not be used, and the token or the API would have come from it */
    private readonly credentialsProblem?: CredentialsFileError,
  ) {}

  /**
   * --api > BERTH_API > last login > default; token from BERTH_TOKEN or the login stored for that API.
   * A credentials file that cannot be used does not fail here (`berth login` replaces it) but in
   * requireToken, when the token or the API would have come from it.
   */
  static async resolve(o: ResolveOptions = {}): Promise<BerthClient> {
    const env = o.env ?? process.env;
    let creds: CredentialsFile = { apis: {} };
    let problem: CredentialsFileError | undefined;
    try {
      creds = await readCredentials(env);
    } catch (e) {
      if (!(e instanceof CredentialsFileError)) throw e;
      problem = e;
    }
    const api = normalizeApiUrl(o.api || env.BERTH_API || creds.current || DEFAULT_API);
    if (env.BERTH_TOKEN) return new BerthClient(api, env.BERTH_TOKEN, 'env', o.api || env.BERTH_API ? undefined : problem);
    const stored = creds.apis[api];
    return stored ? new BerthClient(api, stored.token, 'login') : new BerthClient(api, undefined, 'none', problem);
  }

  /** Throws "not logged in" unless a token is known; a credentials file that cannot be used is exit 1, naming it. */
  requireToken(): string {
    if (this.credentialsProblem) throw new ClientError(this.credentialsProblem.message, EXIT.failed);
    if (!this.token) {
      throw new ClientError(`not logged in to ${this.api}. Run \`berth login${this.api === DEFAULT_API ? '' : ` --api ${this.api}`}\` (or set BERTH_TOKEN).`, EXIT.auth);
    }
    return this.token;
  }

  get<T>(path: string, o: RequestOptions = {}): Promise<T> { return this.request<T>('GET', path, o); }
  post<T>(path: string, json?: unknown, o: RequestOptions = {}): Promise<T> { return this.request<T>('POST', path, { ...o, json }); }
  put<T>(path: string, json?: unknown, o: RequestOptions = {}): Promise<T> { return this.request<T>('PUT', path, { ...o, json }); }
  patch<T>(path: string, json?: unknown, o: RequestOptions = {}): Promise<T> { return this.request<T>('PATCH', path, { ...o, json }); }
  delete<T = void>(path: string, o: RequestOptions = {}): Promise<T> { return this.request<T>('DELETE', path, o); }

  /** A JSON request; resolves with the parsed body (undefined for 204), rejects with a ClientError. */
  async request<T>(method: string, path: string, o: RequestOptions = {}): Promise<T> {
    return (await this.exchange<T>(method, path, o)).body;
  }

  /** `request`, with the answer's headers too (`berth login` keeps the device cookie it sets). */
  async exchange<T>(method: string, path: string, o: RequestOptions = {}): Promise<{ body: T; headers: Record<string, string | string[] | undefined> }> {
    const res = await this.send(method, path, o);
    const text = await this.readAll(res.body, method, path);
    if (res.statusCode >= 400) throw this.apiError(res.statusCode, text, method, path);
    if (res.statusCode === 204 || text === '') return { body: undefined as T, headers: res.headers };
    try {
      return { body: JSON.parse(text) as T, headers: res.headers };
    } catch {
      throw new ClientError(`the API at ${this.api} answered ${method} ${path} with something that is not JSON (is ${this.api} a berth control plane?)`);
    }
  }

  /**
   * A streaming request (SSE, chunked text): resolves once the headers say 2xx, with the body to
   * read. Abort `o.signal` to stop; the connection closes and the server stops its stream.
   */
  async stream(method: string, path: string, o: RequestOptions = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Readable }> {
    const res = await this.send(method, path, { ...o, timeoutMs: o.timeoutMs ?? 60_000 }, 0);
    if (res.statusCode >= 400) throw this.apiError(res.statusCode, await this.readAll(res.body, method, path), method, path);
    return { status: res.statusCode, headers: res.headers, body: res.body as unknown as Readable };
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => {});
  }

  /** `/apps/HOST/` on the proxy and the tag forms are built by the API; this only joins paths. */
  url(path: string): string {
    return this.api + path;
  }

  /**
   * A whole answer, at most MAX_ANSWER_BYTES and within ANSWER_DEADLINE_MS of its first byte (a
   * server trickling a byte a minute, or sending without end, would hold the command for good or
   * take all its memory). Also for bodies a command saves whole (`billing --csv`, reports).
   */
  async readAll(body: Readable | Dispatcher.ResponseData['body'], method: string, path: string): Promise<string> {
    const chunks: Buffer[] = [];
    let n = 0;
    const timer = setTimeout(() => body.destroy(new ClientError(`the API at ${this.api} took longer than ${ANSWER_DEADLINE_MS / 60_000} minutes to send its answer to ${method} ${path}`)), ANSWER_DEADLINE_MS);
    try {
      for await (const c of body) {
        n += (c as Buffer).length;
        if (n > MAX_ANSWER_BYTES) {
          body.destroy();
          throw new ClientError(`the API at ${this.api} answered ${method} ${path} with more than ${MAX_ANSWER_BYTES / 1024 / 1024} MiB; not read further`);
        }
        chunks.push(c as Buffer);
      }
    } catch (e) {
      if (e instanceof ClientError) throw e;
      throw this.transportError(e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }, method, path);
    } finally {
      clearTimeout(timer);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  private async send(method: string, path: string, o: RequestOptions, bodyTimeout = 300_000): Promise<Dispatcher.ResponseData> {
    if (!o.anonymous) this.requireToken();
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'berth-cli', ...o.headers };
    if (!o.anonymous && this.token) headers.authorization = `Bearer ${this.token}`;
    let body = o.body;
    if (o.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(o.json);
    }
    let url = this.api + path;
    if (o.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(o.query)) if (v !== undefined && v !== false) q.set(k, v === true ? '1' : String(v));
      const s = q.toString();
      if (s) url += (url.includes('?') ? '&' : '?') + s;
    }
    try {
      return await request(url, {
        method: method as Dispatcher.HttpMethod, headers, body, signal: o.signal, dispatcher: this.agent,
        headersTimeout: o.timeoutMs ?? 60_000, bodyTimeout,
      });
    } catch (e) {
      throw this.transportError(e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }, method, path);
    }
  }

  private transportError(e: NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }, method: string, path: string): Error {
    if (e.name === 'AbortError' || e.code === 'ABORT_ERR') return e;
    const code = e.cause?.code ?? e.code ?? e.name;
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      return new ClientError(`the API at ${this.api} did not answer ${method} ${path} in time (${code})`, EXIT.failed);
    }
    const why = code && code !== 'Error' ? `${code}${e.message && !e.message.includes(String(code)) ? `: ${e.message}` : ''}` : e.message;
    // TLS spoken to a plain-http server (a bare host means https): say how to ask for http
    if (this.api.startsWith('https:') && /^ERR_SSL_(WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|HTTP_REQUEST)$/.test(String(code))) {
      return new ClientError(`cannot speak TLS with ${this.api} (${String(code)}: the server answered in plain text); if it is a plain-http control plane, give http://HOST:PORT (a bare host means https)`, EXIT.unreachable);
    }
    if (!CONNECT_ERRORS.has(String(code))) {
      // connected, then lost (a reset mid-upload, a proxy in between closing): not "unreachable"
      return new ClientError(`the connection to the berth API at ${this.api} broke during ${method} ${path} (${why})`, EXIT.failed);
    }
    return new ClientError(
      `cannot reach the berth API at ${this.api} (${why}). Is it running (\`berth up\`)? Use --api URL or BERTH_API to point elsewhere.`,
      EXIT.unreachable,
    );
  }

  private apiError(status: number, text: string, method: string, path: string): ClientError {
    let body: ApiErrorBody | undefined;
    try { body = JSON.parse(text) as ApiErrorBody; } catch { /* not ours */ }
    const err = body?.error;
    const code = printable(String(err?.code ?? `http_${status}`));
    const requestId = err?.requestId;
    if (status === 401) {
      const hint = this.tokenSource === 'env'
        ? 'BERTH_TOKEN was refused; set a valid token'
        : `run \`berth login${this.api === DEFAULT_API ? '' : ` --api ${this.api}`}\` again`;
      return new ClientError(`${printable(String(err?.message ?? 'unauthorized'))} (401 from ${this.api}): ${hint}.`, EXIT.auth, { status, code, requestId });
    }
    // (a control plane that is stopping answers in its HTTP server's words, not the API's)
    if (status === 503 && (err === null || typeof err !== 'object')) {
      return new ClientError(`the API at ${this.api} is not serving (503 on ${method} ${path}): a control plane answers so while it stops or restarts; try again in a moment`, EXIT.unreachable, { status, code: 'unavailable' });
    }
    const message = printable(String(err?.message ?? `${method} ${path} answered ${status}${text ? `: ${text.slice(0, 200)}` : ''}`));
    // (a control plane that is stopping: not serving, as when it is away)
    const exit = status === 503 && code === 'shutting_down' ? EXIT.unreachable : EXIT.failed;
    return new ClientError(`${message} (${status} ${code})`, exit, { status, code, requestId });
  }
}
