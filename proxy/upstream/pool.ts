import { abandonAfter, E_POOL_FULL, UpstreamConnection, tell, upstreamError, type ConnectionOwner, type UpstreamError, type UpstreamHandler } from './connection.js';
import { clock, unwatch, watch } from './timers.js';

export interface PoolOptions {
  /** most connections open at once (busy + idle + connecting) */
  connections: number;
  /** idle connections are closed after this long */
  keepAliveTimeoutMs: number;
  connectMs: number;
  /** most idle connections kept (default: connections) */
  maxIdle?: number;
  /** most requests waiting for a connection (default 10,000) */
  maxQueue?: number;
}

/**
 * Keep-alive connections to one upstream address, bounded in total, idle count and idle time,
 * plus a bounded FIFO of requests waiting for a connection. The most recently used idle
 * connection is reused first (its TCP window is warm; the others time out).
 */
export class UpstreamPool implements ConnectionOwner {
  readonly host: string;
  readonly port: number;
  connectTimeoutMs: number;
  private readonly idle: UpstreamConnection[] = [];
  private readonly queue: UpstreamHandler[] = [];
  private queueHead = 0;
  private total = 0;
  private closing = false;
  private readonly maxIdle: number;
  private readonly maxQueue: number;
  /** the connection whose batch is open in this event-loop turn (pipelining routes) */
  private batch: UpstreamConnection | null = null;

  constructor(address: string, private readonly opts: PoolOptions) {
    const colon = address.lastIndexOf(':');
    this.host = address.slice(0, colon).replace(/^\[|\]$/g, '');
    this.port = Number(address.slice(colon + 1));
    this.connectTimeoutMs = opts.connectMs;
    this.maxIdle = opts.maxIdle ?? opts.connections;
    this.maxQueue = opts.maxQueue ?? 10_000;
  }

  /** Send a request as soon as a connection is free. */
  dispatch(h: UpstreamHandler): void {
    if (this.closing) {
      tell(h, upstreamError('UPSTREAM_CLOSED', 'the endpoint was removed'), 'telling a request its endpoint was removed');
      return;
    }
    if (h.pipeline > 1) {
      const b = this.batch;
      if (b !== null && b.canAppend(h)) {
        b.append(h);
        return;
      }
    }
    // (skipping those the upstream closed since they went idle: they leave the list on their close event)
    let c = this.idle.pop();
    while (c !== undefined && !c.idle) c = this.idle.pop();
    if (c !== undefined) {
      this.start(c, h);
      return;
    }
    if (this.queue.length - this.queueHead >= this.maxQueue) {
      tell(h, upstreamError(E_POOL_FULL, `more than ${this.maxQueue} requests waiting for a connection to ${this.host}:${this.port}`), 'refusing a request past the pool queue');
      return;
    }
    this.queue.push(h);
    if (this.total < this.opts.connections) this.open();
  }

  /** A request that gave up while waiting (client aborted) leaves the queue. */
  cancel(h: UpstreamHandler): boolean {
    const i = this.queue.indexOf(h, this.queueHead);
    if (i === -1) return false;
    this.queue.splice(i, 1);
    return true;
  }

  /** Start `h` on `c`; a pipelinable request opens a batch, which requests waiting behind it join. */
  private start(c: UpstreamConnection, h: UpstreamHandler): void {
    c.start(h);
    this.batchBehind(c, h);
  }

  /** A pipelinable request just started on `c`: requests waiting behind it join its batch. */
  private batchBehind(c: UpstreamConnection, h: UpstreamHandler): void {
    if (h.pipeline <= 1) return;
    this.batch = c;
    const q = this.queue;
    while (this.queueHead < q.length) {
      const w = q[this.queueHead];
      if (w.pipeline <= 1 || !c.canAppend(w)) break;
      const n = this.next()!;
      // (a bug in its start is its own: not the request being dispatched, nor a socket event's)
      try {
        c.append(n);
      } catch (e) {
        abandonAfter(n, 'pipelining a waiting request', e);
      }
    }
  }

  private open(): void {
    this.total++;
    new UpstreamConnection(this);
  }

  private next(): UpstreamHandler | undefined {
    if (this.queueHead >= this.queue.length) return undefined;
    const h = this.queue[this.queueHead++];
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    } else if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    }
    return h;
  }

  // ---- ConnectionOwner ----------------------------------------------------------------------

  connected(c: UpstreamConnection): void {
    this.released(c);
  }

  connectFailed(_c: UpstreamConnection, err: UpstreamError): void {
    this.total--;
    // the oldest waiting request learns why (and may retry elsewhere); the rest keep waiting
    // for the connections still open or opening, or for the next attempt
    const h = this.next();
    if (h !== undefined) tell(h, err, 'telling a request its connection failed');
    if (this.queueHead < this.queue.length && this.total < this.opts.connections && !this.closing) this.open();
  }

  released(c: UpstreamConnection): void {
    const h = this.next();
    if (h !== undefined) {
      // (from a socket event: a bug in the waiting request's start must not end the process)
      try {
        c.start(h);
      } catch (e) {
        abandonAfter(h, 'starting a waiting request', e);
        return;
      }
      this.batchBehind(c, h);
      return;
    }
    if (this.closing || this.idle.length >= this.maxIdle) {
      c.destroy();
      return;
    }
    c.idleSince = clock.now;
    this.idle.push(c);
    watch(this);
  }

  closed(c: UpstreamConnection): void {
    this.total--;
    if (this.batch === c) this.batch = null;
    const i = this.idle.indexOf(c);
    if (i !== -1) this.idle.splice(i, 1);
    if (this.queueHead < this.queue.length && this.total < this.opts.connections && !this.closing) this.open();
  }

  /** Close idle connections past their keep-alive time (from the sweep). */
  expire(now: number): void {
    const idle = this.idle;
    while (idle.length > 0 && now - idle[0].idleSince >= this.opts.keepAliveTimeoutMs) idle.shift()!.destroy();
    if (idle.length === 0) unwatch(this);
  }

  /** Close idle connections now, busy ones when their exchange ends; waiting requests fail. */
  async close(): Promise<void> {
    this.closing = true;
    for (const c of this.idle.splice(0)) c.destroy();
    unwatch(this);
    for (let h = this.next(); h !== undefined; h = this.next()) tell(h, upstreamError('UPSTREAM_CLOSED', 'the endpoint was removed'), 'telling a request its endpoint was removed');
    const deadline = Date.now() + 10_000;
    while (this.total > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }
}
