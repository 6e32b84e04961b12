/**
 * Requests real clients send that uWebSockets.js 20.30 (the pinned build) handles before any
 * berth code runs. berth cannot answer these itself; this file shows what happens today and
 * that the proxy survives each one (proxy/README.md, "Known limits", lists them). When a newer
 * uWS answers them properly, the "today" expectations here fail: update the README with them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { get, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from '../proxy/harness.js';
import { rawHttp, type RawResult } from '../helpers/raw-http.js';

let up: Upstream;
let p: ProxyProc;
beforeAll(async () => {
  up = await startUpstream('app');
  p = await startProxy(table([route('app', ['app.test'], [up.address])]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
});

async function survives(): Promise<void> {
  expect(p.proc.exitCode).toBeNull();
  expect((await get(p, 'app.test')).status).toBe(200);
}

/** Today: no response at all (closed or left waiting until uWS's idle timeout); never a 2xx/5xx from berth. */
function silentToday(r: RawResult): void {
  expect(r.statuses, r.text).toEqual([]);
}

describe('known limits of uWebSockets.js 20.30 (answered by uWS, not berth)', () => {
  it('HTTP/1.1 pipelining: uWS closes the connection when a second request arrives before the first is answered', async () => {
    const r = await rawHttp(p.port, 'GET /1 HTTP/1.1\r\nHost: app.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: app.test\r\n\r\n', 1500, 2);
    silentToday(r);
    expect(r.closed).toBe(true);
    await survives();
  });

  it('HTTP/1.0: no answer (uWS waits for more bytes)', async () => {
    silentToday(await rawHttp(p.port, 'GET / HTTP/1.0\r\nHost: app.test\r\n\r\n', 800, 1));
    await survives();
  });

  it.each(['PURGE', 'PROPFIND', 'REPORT', 'QUERY'])('extension method %s: uWS closes the connection', async (m) => {
    const r = await rawHttp(p.port, `${m} / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n`, 800, 1);
    silentToday(r);
    expect(r.closed).toBe(true);
    await survives();
  });

  it('more than 49 header fields: no answer', async () => {
    const many = Array.from({ length: 60 }, (_, i) => `X-H${i}: v\r\n`).join('');
    silentToday(await rawHttp(p.port, `GET / HTTP/1.1\r\nHost: app.test\r\n${many}\r\n`, 800, 1));
    // 45 still pass through
    const some = Array.from({ length: 45 }, (_, i) => `X-H${i}: v\r\n`).join('');
    expect((await rawHttp(p.port, `GET / HTTP/1.1\r\nHost: app.test\r\n${some}\r\n`, 1500, 1)).statuses).toEqual([200]);
    await survives();
  });

  it('bytes >= 0x80 at the very end of a header value are trimmed by uWS (as whitespace) before berth sees them', async () => {
    const data = Buffer.concat([Buffer.from('GET / HTTP/1.1\r\nHost: app.test\r\nX-Name: caf', 'latin1'), Buffer.from('é', 'utf8'), Buffer.from('\r\n\r\n')]);
    const r = await rawHttp(p.port, data, 1500, 1);
    expect(r.statuses).toEqual([200]);
    const body = JSON.parse(r.text.slice(r.text.indexOf('{'), r.text.lastIndexOf('}') + 1)) as { headers: Record<string, string> };
    expect(body.headers['x-name']).toBe('caf');
    await survives();
  });
});
