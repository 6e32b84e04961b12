import { StringDecoder } from 'node:string_decoder';
import { request } from 'undici';
import type { RouteDelta, RouteTableSpec } from '../../shared/routes/schema.js';
import { applyRouteDeltas } from '../../shared/routes/delta.js';
import { parseRouteDelta, parseRouteTable, RouteTableError } from '../../shared/routes/validate.js';
import type { Logger } from '../../shared/logging.js';

/** The longest rest after applying a table (see deliver()). */
const MAX_REST_MS = 1000;

/** A stream up this long counts as healthy: the next reconnect starts the backoff over. */
const STABLE_STREAM_MS = 30_000;

/** The largest event the route stream may send (a table; the admin listener takes as much), and the most held unapplied. */
const MAX_EVENT_CHARS = 64 * 1024 * 1024;

/** What a batch of deltas changed: applied to `from` (the table this source delivered before), in order. */
export interface TableChange {
  from: RouteTableSpec;
  deltas: RouteDelta[];
}

/** How a table came from the control plane. */
export interface Arrival {
  /** the deltas that made it of the table delivered before; null: it came whole */
  change: TableChange | null;
  /** the table as sent, when it came whole and nothing after it (to keep on disk as it came) */
  text: string | null;
  /** ms spent reading and checking it (JSON, schema, hosts and addresses) on the serving thread */
  parseMs: number;
}

/** One event not applied yet: a whole table (`routes`) or a change to the one before (`delta`), and the stream it came on. */
interface Held {
  delta: boolean;
  text: string;
  stream: number;
}

/**
 * Subscribes to the control plane's `GET /v1/routes/watch` (Server-Sent Events): a `routes`
 * event carries a whole table (the first on every stream), a `delta` event the routes changed and
 * removed since the table before (shared/routes/schema.ts RouteDelta). Reconnects with jittered
 * exponential backoff; while disconnected the proxy keeps serving whatever it has. A delta that
 * does not fit the table it names (or a table that does not check) ends the stream: the next one
 * starts with a whole table.
 */
export class ControlPlaneSource {
  private stopped = false;
  private abort: AbortController | null = null;
  private attempt = 0;
  connected = false;
  lastError = '';
  /** events not applied yet, in order (a whole table drops those before it), their size, and whether a batch is being applied */
  private pending: Held[] = [];
  private pendingChars = 0;
  private applying = false;
  /** the table this source delivered last (what the next delta applies to) */
  private spec: RouteTableSpec | null = null;
  /** why the stream was dropped to read the whole table again; deltas are ignored until it comes */
  private resync: string | null = null;
  /** which stream is open (counted from 1): a failure of an older one's event does not drop it */
  private stream = 0;

  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    /** applies a valid table; resolves with the ms the apply took on the serving threads (not its persisting) */
    private readonly onTable: (t: RouteTableSpec, how: Arrival) => Promise<number>,
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
        this.lastError = this.resync ?? 'stream ended';
      } catch (e) {
        if (this.stopped) return;
        this.lastError = this.resync ?? (e as Error).message;
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
    const stream = ++this.stream;
    const url = new URL('/v1/routes/watch', this.baseUrl);
    // what this proxy reads: tables with splits, affinity, private routes and pipelining, and deltas
    url.searchParams.set('features', 'split,affinity,auth,pipeline,delta');
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
          if (data.length > 0 && (event === 'routes' || event === 'message' || event === 'delta')) this.offer(event === 'delta', data.join('\n'), stream);
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
   * An event came: it is applied with the others held when the batch being applied is done. A
   * whole table makes those before it moot (they are dropped, never parsed); deltas are applied in
   * order, all held ones at once (one compile for a burst).
   */
  private offer(delta: boolean, text: string, stream: number): void {
    if (delta && this.resync !== null) return;
    if (!delta) {
      this.resync = null;
      this.pending = [];
      this.pendingChars = 0;
    }
    this.pending.push({ delta, text, stream });
    this.pendingChars += text.length;
    if (this.pendingChars > MAX_EVENT_CHARS) {
      this.pending = [];
      this.pendingChars = 0;
      return this.lose(`more than ${MAX_EVENT_CHARS} characters of route changes came while one was being applied`, stream);
    }
    if (!this.applying) void this.applyPending();
  }

  private async applyPending(): Promise<void> {
    this.applying = true;
    while (this.pending.length > 0 && !this.stopped) {
      const batch = this.pending;
      this.pending = [];
      this.pendingChars = 0;
      await this.deliver(batch);
    }
    this.applying = false;
  }

  /**
   * Apply one batch (a whole table and/or deltas), then rest as long as that took (at most
   * MAX_REST_MS) before the next: however fast changes come (a tenant toggling a setting in a
   * loop), applying them takes at most about half of the serving thread.
   */
  private async deliver(batch: Held[]): Promise<void> {
    // the work the serving thread did: parsing and applying (not writing the table to disk)
    let took = 0;
    try {
      const t0 = performance.now();
      const from = this.spec;
      // (offer() drops what came before a whole table: only the first can be one)
      const whole = !batch[0].delta;
      let spec = whole ? parseRouteTable(batch[0].text) : from;
      if (spec === null) throw new RouteTableError('a delta came before any table', 'base');
      const deltas: RouteDelta[] = [];
      for (let i = whole ? 1 : 0; i < batch.length; i++) deltas.push(parseRouteDelta(batch[i].text));
      if (deltas.length > 0) spec = applyRouteDeltas(spec, deltas);
      took = performance.now() - t0;
      took += await this.onTable(spec, { change: whole ? null : { from: from!, deltas }, text: whole && deltas.length === 0 ? batch[0].text : null, parseMs: took });
      this.spec = spec;
    } catch (e) {
      this.lose(`the control plane sent a route ${batch.length === 1 && !batch[0].delta ? 'table' : 'change'} this proxy could not apply (${(e as Error).message}); keeping the current table`, batch[batch.length - 1].stream);
    }
    if (took >= 1 && !this.stopped) await new Promise((r) => setTimeout(r, Math.min(took, MAX_REST_MS)).unref());
  }

  /**
   * Lost track of the control plane's table with what came on `stream`. A whole table already
   * held (on that stream or a newer one) sets it right: it is applied next. Otherwise the deltas
   * held are dropped and, when `stream` is still open, so is it: the next one starts with the
   * whole table (a stream opened since does already).
   */
  private lose(reason: string, stream: number): void {
    const whole = this.pending.length > 0 && !this.pending[0].delta;
    this.logger.error({ err: reason }, whole ? 'route change not applied; a whole table follows' : 'route stream out of step; reading the whole table again');
    if (whole) return;
    this.pending = [];
    this.pendingChars = 0;
    if (stream !== this.stream) return;
    this.resync = reason;
    this.abort?.abort();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }
}
