/** routing/queue.ts: the per-route queue of requests beyond the endpoints' concurrency caps. */
import { describe, expect, it } from 'vitest';
import { RouteQueue, type Waiting } from '../../proxy/routing/queue.js';

class W implements Waiting {
  gone = false;
  waitingSince = 0;
  resumed = 0;
  constructor(private readonly room: () => boolean = () => true) {}
  resume(): boolean { if (!this.room()) return false; this.resumed++; return true; }
  expireWait(): void { this.gone = true; }
  rehome(): void {}
  refuseWake(): void { this.gone = true; }
}

describe('RouteQueue', () => {
  it('frees slots in order, skipping requests whose client left', () => {
    const q = new RouteQueue(10, 60_000);
    const ws = [new W(), new W(), new W()];
    for (const w of ws) expect(q.push(w, 0)).toBe(true);
    ws[0].gone = true;
    expect(q.release()).toBe(true);
    expect(ws.map((w) => w.resumed)).toEqual([0, 1, 0]);
    expect(q.length).toBe(1);
  });

  it('requests whose client left do not keep others out once the queue is full', () => {
    const q = new RouteQueue(3, 60_000);
    const head = new W(() => false);
    expect(q.push(head, 0)).toBe(true);
    const aborted = [new W(), new W()];
    for (const w of aborted) expect(q.push(w, 0)).toBe(true);
    // full of requests still waiting: refused
    expect(q.push(new W(), 0)).toBe(false);
    // two clients leave (each tells the queue): the next ones take their places
    for (const w of aborted) { w.gone = true; q.noteGone(); }
    const next = [new W(), new W()];
    for (const w of next) expect(q.push(w, 0)).toBe(true);
    expect(q.length).toBe(3);
    expect(q.push(new W(), 0)).toBe(false);
    // and the order is kept: the head first, then the newcomers
    expect(q.takeAll()).toEqual([head, ...next]);
  });

  it('a note without anyone gone costs one look, then the queue is full as before', () => {
    const q = new RouteQueue(2, 60_000);
    expect(q.push(new W(), 0) && q.push(new W(), 0)).toBe(true);
    q.noteGone();
    expect(q.push(new W(), 0)).toBe(false);
    expect(q.length).toBe(2);
  });
});
