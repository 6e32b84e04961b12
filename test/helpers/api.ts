/** A small HTTP client for control-plane tests. */
export interface ApiResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

export interface UploadFields {
  [k: string]: string | number | undefined;
}

export class Api {
  constructor(readonly base: string, public token?: string) {}

  withToken(token: string | undefined): Api {
    return new Api(this.base, token);
  }

  async req<T = any>(method: string, path: string, opts: { json?: unknown; body?: BodyInit; headers?: Record<string, string>; token?: string | null } = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    const token = opts.token === null ? undefined : opts.token ?? this.token;
    if (token) headers.authorization = `Bearer ${token}`;
    let body = opts.body;
    if (opts.json !== undefined) { headers['content-type'] = 'application/json'; body = JSON.stringify(opts.json); }
    const res = await fetch(this.base + path, { method, headers, body });
    const text = await res.text();
    let parsed: any = text;
    try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not json */ }
    return { status: res.status, headers: res.headers, body: parsed as T, text };
  }

  get<T = any>(path: string) { return this.req<T>('GET', path); }
  post<T = any>(path: string, json?: unknown) { return this.req<T>('POST', path, { json }); }
  del<T = any>(path: string) { return this.req<T>('DELETE', path); }

  async signup(email: string, password = 'correct-horse-1', username?: string): Promise<Api> {
    const r = await this.req('POST', '/api/auth/signup', { json: { email, password, ...(username ? { username } : {}) }, token: null });
    if (r.status !== 201) throw new Error(`signup failed: ${r.status} ${r.text}`);
    return this.withToken(r.body.token);
  }

  /** POST /api/images with the given fields and archive. */
  upload(fields: UploadFields, archive?: Buffer, filename = 'src.tar'): Promise<ApiResponse> {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) form.append(k, String(v));
    if (archive) form.append('file', new Blob([new Uint8Array(archive)]), filename);
    return this.req('POST', '/api/images', { body: form });
  }

  /** Poll an image until its status is no longer `building`. */
  waitForBuild(id: number, timeoutMs = 60_000): Promise<any> {
    return this.waitWhile(`/api/images/${id}`, 'building', timeoutMs);
  }

  /** Poll `path` (every 200 ms) until its body's `status` is no longer `status`; returns the body. */
  async waitWhile(path: string, status: string, timeoutMs: number): Promise<any> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.get(path);
      if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.text}`);
      if (r.body.status !== status) return r.body;
      if (Date.now() > end) throw new Error(`${path} still ${status} after ${timeoutMs} ms`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }
}
