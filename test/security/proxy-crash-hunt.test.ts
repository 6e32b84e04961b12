/**
 * Inputs found by a crash/hang/leak hunt against a real proxy (raw sockets, real upstreams):
 * each one used to kill the process, take a healthy route down, or grow memory without bound.
 */
import { createHash } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { get, route, rss, startProxy, startUpstream, table, waitFor, type ProxyProc, type Upstream } from '../proxy/harness.js';

/** One request on a raw socket; resolves with what came back when the socket closes or after `ms`. */
function raw(port: number, data: string, ms = 1500): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(data));
    let got = '';
    const t = setTimeout(() => { s.destroy(); resolve(got); }, ms);
    s.on('data', (c) => { got += c.toString('latin1'); });
    s.on('error', () => undefined);
    s.on('close', () => { clearTimeout(t); resolve(got); });
  });
}

let up: Upstream;
let p: ProxyProc;
beforeAll(async () => {
  up = await startUpstream('ok');
  p = await startProxy(table([route('ok', ['ok.test'], [up.address])]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
});

describe('CONNECT is refused, never forwarded', () => {
  it('three CONNECTs do not open the breaker of a healthy route (they used to: the app resets a CONNECT)', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await raw(p.port, 'CONNECT / HTTP/1.1\r\nHost: ok.test\r\n\r\n');
      expect(r).toMatch(/^HTTP\/1\.1 400 /);
      expect(r).toContain('x-berth-error: connect_method');
    }
    const hits = up.hits;
    const r = await get(p, 'ok.test', '/');
    expect(r.status).toBe(200);
    expect(up.hits).toBe(hits + 1);
    expect(p.proc.exitCode).toBeNull();
  });
});
