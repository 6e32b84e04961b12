import { LRUCache } from 'lru-cache';
import type { Logger } from '../../shared/logging.js';
import { Listener } from '../db/listen.js';

/** The channel migration 027's trigger notifies, with the event's user id as payload. */
const CHANNEL = 'berth_events';

/** Why a wait ended. */
export type WakeReason = 'event' | 'timeout' | 'closed';

interface Waiter {
  done(reason: WakeReason): void;
}

/**
 * Long polls of GET /api/events, woken when one of their user's events commits on any control
 * plane: one connection LISTENs to the channel migration 027's trigger notifies (db/listen.ts).
 * While that connection is away (the database restarting, a connection cut silently: it checks
 * every minute that a notification of its own comes back), a wait ends after `fallbackMs` at most,
 * so a follower is never much later than polling would make it; the connection is made again with
 * backoff.
 *
 * A poll takes `mark(user)` before it lists, and waits from that mark: a notification that came
 * in between (while it listed) ends the wait at once instead of being missed.
 */
export class EventWaiters {
  private readonly listener: Listener;
  private readonly waiting = new Map<number, Set<Waiter>>();
  /** per user, the sequence number of their last notification (users notified lately) */
  private readonly notified = new LRUCache<number, number>({ max: 10_000 });
  /** the sequence number of the last time every wait had to look again (listening began or stopped) */
  private everyone = 0;
  private seq = 0;
  private closed = false;

  constructor(
    url: string,
    log: Logger,
    private readonly fallbackMs = 2000,
  ) {
    this.listener = new Listener(url, CHANNEL, log, {
      cannot: 'events: cannot listen for new events; long polls fall back to looking every 2 s',
      again: 'events: listening for new events again',
      stopped: 'events: the connection listening for new events stopped hearing them; making it again',
    }, {
      notify: (payload) => {
        const user = Number(payload);
        if (Number.isSafeInteger(user)) this.wake(user, 'event');
      },
      // events committed while nobody listened: every wait looks again; and while nobody
      // listens, waits that counted on notifications look again now, then every fallbackMs
      up: () => this.wakeAll(),
      down: () => this.wakeAll(),
    });
  }

  start(): void {
    this.listener.start();
  }

  private wakeAll(): void {
    // (a poll between its mark and its wait looks again too)
    this.everyone = ++this.seq;
    for (const user of [...this.waiting.keys()]) this.wake(user, 'event');
  }

  private wake(user: number, reason: WakeReason): void {
    if (reason === 'event') this.notified.set(user, ++this.seq);
    const set = this.waiting.get(user);
    if (set === undefined) return;
    this.waiting.delete(user);
    for (const w of set) w.done(reason);
  }

  /** Where `user`'s notifications stand: pass it to wait() to hear of any that come after it. */
  mark(user: number): number {
    const own = this.notified.get(user) ?? 0;
    return own > this.everyone ? own : this.everyone;
  }

  /**
   * Wait until an event of `user` may have committed since `since` (a mark(); 'event': at once
   * when one already has), `ms` passed ('timeout'; at most fallbackMs while not listening), or
   * the control plane closes or `signal` aborts ('closed').
   */
  wait(user: number, ms: number, signal: AbortSignal, since: number): Promise<WakeReason> {
    if (this.closed || signal.aborted) return Promise.resolve('closed');
    if (this.mark(user) > since) return Promise.resolve('event');
    let set = this.waiting.get(user);
    if (set === undefined) this.waiting.set(user, (set = new Set()));
    const mine = set;
    return new Promise<WakeReason>((resolve) => {
      const waiter: Waiter = {
        done: (reason) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          mine.delete(waiter);
          if (mine.size === 0 && this.waiting.get(user) === mine) this.waiting.delete(user);
          resolve(reason);
        },
      };
      const onAbort = () => waiter.done('closed');
      const timer = setTimeout(() => waiter.done('timeout'), this.listener.listening ? ms : Math.min(ms, this.fallbackMs));
      signal.addEventListener('abort', onAbort, { once: true });
      mine.add(waiter);
    });
  }

  /** End every wait now ('closed') and stop listening. */
  async close(): Promise<void> {
    this.closed = true;
    for (const user of [...this.waiting.keys()]) this.wake(user, 'closed');
    await this.listener.close();
  }
}
