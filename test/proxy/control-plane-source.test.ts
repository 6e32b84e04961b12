import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ControlPlaneSource, type Arrival } from '../../proxy/sync/control-plane-source.js';
import type { RouteTableSpec } from '../../shared/routes/schema.js';

/**
 * The source's handling of events that do not apply, driven event by event (its stream handling
 * with a real server: sync.test.ts). `offer` is what the stream reader calls per event.
 */
type Internals = { offer(delta: boolean, text: string, stream: number): void; stream: number; abort: AbortController | null; pending: unknown[] };

function source(apply: (t: RouteTableSpec, how: Arrival) => Promise<number>) {
  const src = new ControlPlaneSource('http://127.0.0.1:1', 't', apply, pino({ level: 'silent' }));
  const inner = src as unknown as Internals;
  const aborts: number[] = [];
  const open = (n: number) => {
    inner.stream = n;
    const ac = new AbortController();
    ac.signal.addEventListener('abort', () => aborts.push(n));
    inner.abort = ac;
  };
  return { src, inner, aborts, open };
}

const table = (version: number, host = 'a.test') => JSON.stringify({ version, routes: [{ id: 'a', hosts: [host], endpoints: [] }] });
const settle = () => new Promise((r) => setTimeout(r, 30));

describe('control-plane source (sync/control-plane-source.ts)', () => {
  it('a change that does not apply drops its stream (deltas ignored until a whole table); an older stream\'s failure drops no newer one', async () => {
    const applied: number[] = [];
    let fail = false;
    let release: (() => void) | null = null;
    const { inner, aborts, open } = source(async (t) => {
      if (release === null && t.version === 3) await new Promise<void>((r) => (release = r));
      if (fail) {
        fail = false;
        throw new Error('apply failed');
      }
      applied.push(t.version);
      return 0;
    });
    open(1);
    inner.offer(false, table(1), 1);
    await settle();
    inner.offer(true, JSON.stringify({ base: 1, version: 2, upsert: [], remove: [] }), 1);
    await settle();
    expect(applied).toEqual([1, 2]);
    // a delta from another base: stream 1 is dropped, and deltas after it are ignored
    inner.offer(true, JSON.stringify({ base: 7, version: 8, upsert: [], remove: [] }), 1);
    await settle();
    expect(aborts).toEqual([1]);
    inner.offer(true, JSON.stringify({ base: 2, version: 3, upsert: [], remove: [] }), 1);
    await settle();
    expect(applied).toEqual([1, 2]);
    // stream 2 starts whole; its apply of version 3 is held while stream 3 opens and sends a table
    open(2);
    inner.offer(false, table(3), 2);
    await settle();
    open(3);
    inner.offer(false, table(4), 3);
    fail = true;
    release!();
    await settle();
    // stream 2's table failed: stream 3 (open) is not dropped, its table stays and is applied
    expect(aborts).toEqual([1]);
    expect(applied).toEqual([1, 2, 4]);
  });
});
