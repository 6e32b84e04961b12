import { unwatch, watch } from '../upstream/timers.js';

/** A request waiting for an endpoint below its concurrency cap. */
export interface Waiting {
  /** Try again now that a slot freed: false when still no endpoint can take it (it stays first). */
  resume(): boolean;
  /** It waited too long: answer 504 queue_timeout. */
  expireWait(): void;
  /** Its route left the table (traffic moved to another revision): route it again by its host. */
  rehome(): void;
  /** Its route is asleep and cannot be woken now (no room for an instance): answer 503 at once. */
  refuseWake(): void;
  /** the client went away, or the request was answered otherwise */
  readonly gone: boolean;
  waitingSince: number;
}

/**
 * The per-route FIFO of requests beyond every endpoint's concurrency cap, bounded in entries
 * (503 `overloaded` beyond, decided by the caller) and in time (504 `queue_timeout`, from the
 * upstream timers' sweep). A freed slot goes to the oldest request still waiting, so requests
 * leave in the order they came.
 */
export class RouteQueue {
  private items: Waiting[] = [];
  private head = 0;
  /** a client has gone since the last compaction: entries may be dead weight */
  private goneHint = false;

  constructor(public maxEntries: number, public timeoutMs: number) {}

  get length(): number {
    return this.items.length - this.head;
  }

  /**
   * false when the queue is full of requests still waiting. Requests whose client left count
   * until they are dropped: when full after clients left, the queue is compacted first (else a
   * burst of requests aborted at once would fill it, and everyone else get 503 until the head's
   * timeout; each compaction is paid for by one aborted request).
   */
  push(w: Waiting, now: number): boolean {
    if (this.length >= this.maxEntries) {
      if (!this.goneHint) return false;
      this.compact();
      if (this.length >= this.maxEntries) return false;
    }
    w.waitingSince = now;
    this.items.push(w);
    if (this.length === 1) watch(this);
    return true;
  }

  /** A slot freed on one of the route's endpoints: the oldest waiting request may take it. */
  release(): boolean {
    while (this.head < this.items.length) {
      const w = this.items[this.head];
      if (w.gone) {
        this.shift();
        continue;
      }
      if (!w.resume()) return false;
      // resume() may have re-entered release(); only drop w if it is still first
      if (this.items[this.head] === w) this.shift();
      return true;
    }
    return false;
  }

  /** A client went away: one of the entries may be gone (compacted when the queue is next full). */
  noteGone(): void {
    if (this.length > 0) this.goneHint = true;
  }

  private compact(): void {
    this.goneHint = false;
    const live: Waiting[] = [];
    for (let i = this.head; i < this.items.length; i++) if (!this.items[i].gone) live.push(this.items[i]);
    this.items = live;
    this.head = 0;
    if (live.length === 0) unwatch(this);
  }

  /** Endpoints appeared (a new table): send as many waiting requests as they take, in order. */
  releaseAll(): void {
    while (this.length > 0 && this.release()) { /* next */ }
  }

  /** Every request still waiting, in order, out of the queue (its route is gone). */
  takeAll(): Waiting[] {
    const out: Waiting[] = [];
    for (let i = this.head; i < this.items.length; i++) if (!this.items[i].gone) out.push(this.items[i]);
    this.items = [];
    this.head = 0;
    unwatch(this);
    return out;
  }

  private shift(): void {
    this.items[this.head++] = undefined as unknown as Waiting;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
      unwatch(this);
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /** From the sweep: requests older than the timeout are answered 504. */
  expire(now: number): void {
    while (this.head < this.items.length) {
      const w = this.items[this.head];
      if (!w.gone && now - w.waitingSince < this.timeoutMs) return;
      this.shift();
      if (!w.gone) w.expireWait();
    }
  }
}
