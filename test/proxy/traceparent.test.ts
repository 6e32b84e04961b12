import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { get, route, startProxy, startUpstream, table, waitFor, type ProxyProc, type Upstream } from './harness.js';
import { traceIdOf, validTraceparent } from '../../shared/trace.js';

/** W3C trace context: the proxy keeps a valid `traceparent`, starts one otherwise, forwards it, and logs the trace id. */
let up: Upstream;
let px: ProxyProc;
const HOST = 'trace.test';
const seen = async (headers: Record<string, string> = {}) => JSON.parse((await get(px, HOST, '/t', { headers })).body).headers as Record<string, string>;

beforeAll(async () => {
  up = await startUpstream('u');
  px = await startProxy(table([route('img-1', [HOST], [up.address])]), [], { BERTH_ACCESS_LOG: 'on' });
});
afterAll(async () => { await px?.stop(); await up?.close(); });

describe('traceparent', () => {
  it('starts a valid, distinct trace for requests without one', async () => {
    const a = (await seen()).traceparent;
    const b = (await seen()).traceparent;
    expect(validTraceparent(a)).toBe(true);
    expect(validTraceparent(b)).toBe(true);
    expect(a.slice(3, 35)).not.toBe(b.slice(3, 35));
    expect(a.endsWith('-01')).toBe(true);
  });

  it('keeps a valid one as sent, replaces an invalid one, and passes tracestate through', async () => {
    const mine = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const h = await seen({ traceparent: mine, tracestate: 'vendor=x' });
    expect(h.traceparent).toBe(mine);
    expect(h.tracestate).toBe('vendor=x');
    for (const bad of ['00-00000000000000000000000000000000-00f067aa0ba902b7-01', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', 'garbage', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01']) {
      const t = (await seen({ traceparent: bad })).traceparent;
      expect(t, bad).not.toBe(bad);
      expect(validTraceparent(t), bad).toBe(true);
    }
  });

  it('logs the trace id on the access log line', async () => {
    const mine = '00-aaaabbbbccccddddeeeeffff00001111-00f067aa0ba902b7-00';
    await seen({ traceparent: mine });
    await waitFor(() => px.logs().includes('"traceId":"aaaabbbbccccddddeeeeffff00001111"'), 5000);
    expect(traceIdOf(mine)).toBe('aaaabbbbccccddddeeeeffff00001111');
    expect(traceIdOf(['x'])).toBeUndefined();
  });
});
