import { StringDecoder } from 'node:string_decoder';
import { request } from 'undici';
import type { RouteTableSpec } from '../../shared/routes/schema.js';
import { parseRouteTable } from '../../shared/routes/validate.js';
import type { Logger } from '../../shared/logging.js';

/** The longest rest after applying a table (see deliver()). */
const MAX_REST_MS = 1000;

/** A stream up this long counts as healthy: the next reconnect starts the backoff over. */
const STABLE_STREAM_MS = 30_000;

/** The largest event the route stream may send (a table; the admin listener takes as much). */
const MAX_EVENT_CHARS = 64 * 1024 * 1024;

/**
 * Subscribes to the control plane's `GET /v1/routes/watch` (Server-Sent Events; each `routes`
 * event carries a full table). Reconnects with jittered exponential backoff; while disconnected
 * the proxy keeps serving whatever it has.
 */
export class ControlPlaneSource {
  private stopped = false;
  private abort: AbortController | null = null;
  private attempt = 0;
  connected = false;
  lastVersion: number | null = null;
  lastError = '';
  /** the newest table not applied yet (SSE data), and whether one is being applied */
  private pending: string | null = null;
  private applying = false;

  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    /** applies a valid table (and keeps its text, as sent); resolves with the ms the apply took on the serving threads (not its persisting) */
    private readonly onTable: (t: RouteTableSpec, text: string) => Promise<number>,
    private readonly logger: Logger,
    private readonly idleTimeoutMs = 45_000,
  ) {}

  start(): void {
    void this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const since = Date.now();
      try {
        await this.connectOnce();
        this.lastError = 'stream ended';
      } catch (e) {
        if (this.stopped) return;
        this.lastError = (e as Error).message;
      }
      this.connected = false;
      if (this.stopped) return;
      // the backoff starts over after a stream that stayed up a while, not after any table (a
      // control plane closing the stream after each table would otherwise be reconnected at once, for good)
      if (Date.now() - since >= STABLE_STREAM_MS) this.attempt = 0;
      const base = Math.min(30_000, 500 * 2 ** Math.min(this.attempt, 6));
      const delay = base / 2 + Math.random() * (base / 2);
      this.attempt++;
      this.logger.warn({ err: this.lastError, retryInMs: Math.round(delay) }, 'control plane watch disconnected; serving the last table');
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  private async connectOnce(): Promise<void> {
    this.abort = new AbortController();
    const url = new URL('/v1/routes/watch', this.baseUrl);
    // this proxy splits a host between revisions (trafficWeight): send it whole tables
    url.searchParams.set('features', 'split,affinity,auth,pipeline');
    const res = await request(url, {
      method: 'GET',
      headers: { authorization: `Bearer ${this.token}`, accept: 'text/event-stream' },
      signal: this.abort.signal,
      headersTimeout: 10_000,
      // The control plane sends a `: ping` comment every 15 s: 45 s of silence means a dead
      // (half-open) stream, which must end in a reconnect rather than a quietly stale table.
      bodyTimeout: this.idleTimeoutMs,
    });
    if (res.statusCode !== 200) {
      // (the first KiB of what it said: an error page has no business being larger)
      let text = '';
      try {
        for await (const c of res.body as AsyncIterable<Buffer>) {
          text += c.toString('utf8');
          if (text.length >= 1024) break;
        }
      } catch { /* the reason is the status */ }
      res.body.destroy();
      throw new Error(`watch answered ${res.statusCode}: ${text.slice(0, 200)}`);
    }
    this.connected = true;
    this.logger.info({ url: url.href }, 'subscribed to control plane route updates');
    // the line read so far: a table is one `data:` line over many reads, joined once it ends
    // (not appended to and searched again at every read)
    const parts: string[] = [];
    let event = 'message';
    let data: string[] = [];
    // what is held for one event (its unfinished line and its data lines): a table is at most
    // MAX_EVENT_CHARS (the admin listener's limit too); past it the stream is dropped and opened again
    let partsLen = 0;
    let dataLen = 0;
    // (undici's body yields Buffers whatever setEncoding says; a character may span two reads)
    const text = new StringDecoder('utf8');
    for await (const raw of res.body as AsyncIterable<Buffer>) {
      const chunk = text.write(raw);
      let from = 0;
      let nl: number;
      while ((nl = chunk.indexOf('\n', from)) !== -1) {
        let line = chunk.slice(from, nl);
        from = nl + 1;
        if (parts.length > 0) {
          parts.push(line);
          line = parts.join('');
          parts.length = 0;
          partsLen = 0;
        }
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length > 0 && (event === 'routes' || event === 'message')) this.offer(data.join('\n'));
          event = 'message';
          data = [];
          dataLen = 0;
        } else if (line.startsWith(':')) {
          // comment / heartbeat
        } else if (line.startsWith('event:')) {
          event = line.slice(6).trim();
        } else if (line.startsWith('data:')) {
          data.push(line.slice(5).replace(/^ /, ''));
          dataLen += line.length;
        }
      }
      if (from < chunk.length) {
        parts.push(from === 0 ? chunk : chunk.slice(from));
        partsLen += chunk.length - from;
      }
      if (partsLen + dataLen > MAX_EVENT_CHARS) throw new Error(`the route stream sent an event of more than ${MAX_EVENT_CHARS} characters`);
    }
  }

  /**
   * A table came: it is applied when the one being applied is done, unless a newer one comes
   * first (each is whole: the tables in between are skipped, never parsed).
   */
  private offer(text: string): void {
    this.pending = text;
    if (!this.applying) void this.applyPending();
  }

  private async applyPending(): Promise<void> {
    this.applying = true;
    while (this.pending !== null && !this.stopped) {
      const text = this.pending;
      this.pending = null;
      await this.deliver(text);
    }
    this.applying = false;
  }

  /**
   * Apply one table, then rest as long as that took (at most MAX_REST_MS) before the next:
   * however fast tables come (a tenant toggling a setting in a loop), applying them takes at most
   * about half of the serving thread, and only the newest of those that came meanwhile is applied.
   */
  private async deliver(text: string): Promise<void> {
    // the work the serving thread did: parsing and applying (not writing the table to disk)
    let took = 0;
    try {
      const t0 = performance.now();
      const spec = parseRouteTable(text);
      took = performance.now() - t0;
      this.lastVersion = spec.version;
      took += await this.onTable(spec, text);
    } catch (e) {
      this.logger.error({ err: (e as Error).message }, 'control plane sent an invalid route table; keeping the current one');
    }
    if (took >= 1 && !this.stopped) await new Promise((r) => setTimeout(r, Math.min(took, MAX_REST_MS)).unref());
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }
}
