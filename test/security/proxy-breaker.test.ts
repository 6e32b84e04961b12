/**
 * No client can open a circuit breaker or take an app offline: requests the proxy cannot forward
 * faithfully are refused with 400 before an endpoint is picked, and errors the client caused
 * never count against the endpoint. Every case sends more bad requests than the breaker's
 * threshold, then checks the app still answers.
 */
import { connect, createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { WebSocket } from 'undici';
import { adminToken, get, putRoutes, route, startProxy, startUpstream, table, waitFor, type ProxyProc, type Upstream } from '../proxy/harness.js';
import { rawHeader, rawHttp } from '../helpers/raw-http.js';

let up: Upstream;
let p: ProxyProc;
const BREAKER = { circuitBreaker: { consecutiveFailures: 3, openMs: 15_000 } };
beforeAll(async () => {
  up = await startUpstream('app', (req, res) => {
    if (req.url === '/ws') { res.writeHead(404); res.end('no websocket here'); return; }
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => {
      const body = Buffer.from(JSON.stringify({ url: req.url, bytes: n, raw: req.rawHeaders }));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    });
  });
  p = await startProxy(table([route('app', ['app.test'], [up.address], BREAKER)]));
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
});

async function endpointState(): Promise<{ state: string; failures: number }> {
  const r = await request(`${p.admin}/stats`);
  const s = (await r.body.json()) as { endpoints: Array<{ address: string; state: string; failures: number }> };
  return s.endpoints.find((e) => e.address === up.address)!;
}

async function stillUp(): Promise<void> {
  const r = await get(p, 'app.test');
  expect(r.status).toBe(200);
  const s = await endpointState();
  expect(s.state).toBe('closed');
  expect(s.failures).toBe(0);
}

const head = (lines: string[]) => lines.join('\r\n') + '\r\n\r\n';

describe('admission: refused with 400 before an endpoint is picked', () => {
  it.each([
    ['two identical Content-Length', head(['POST / HTTP/1.1', 'Host: app.test', 'Content-Length: 5', 'Content-Length: 5']) + 'hello', 'bad_content_length'],
    ['two different Content-Length', head(['POST / HTTP/1.1', 'Host: app.test', 'Content-Length: 5', 'Content-Length: 6']) + 'hello!', 'bad_content_length'],
    ['Transfer-Encoding other than chunked', head(['POST / HTTP/1.1', 'Host: app.test', 'Transfer-Encoding: gzip, chunked']) + '5\r\nhello\r\n0\r\n\r\n', 'bad_transfer_encoding'],
    ['two Host headers', head(['GET / HTTP/1.1', 'Host: app.test', 'Host: other.test']), 'duplicate_host'],
    ['Host with userinfo', head(['GET / HTTP/1.1', 'Host: user@app.test']), 'bad_host'],
    ['Host with a path', head(['GET / HTTP/1.1', 'Host: app.test/x']), 'bad_host'],
    ['Host with a fragment', head(['GET / HTTP/1.1', 'Host: app.test#x']), 'bad_host'],
    ['Host with a scheme', head(['GET / HTTP/1.1', 'Host: http://app.test']), 'bad_host'],
    ['Host with a bad port', head(['GET / HTTP/1.1', 'Host: app.test:80x']), 'bad_host'],
    ['/apps/ host with userinfo', head(['GET /apps/x@app.test/ HTTP/1.1', 'Host: 127.0.0.1']), 'bad_host'],
    ['DEL in a header value', head(['GET / HTTP/1.1', 'Host: app.test', 'X-A: a\x7fb']), 'bad_header_value'],
    ['invalid UTF-8 in a header value', head(['GET / HTTP/1.1', 'Host: app.test', 'X-A: caf\xe9 au lait']), 'bad_header_value'],
    ['a NUL in a header value', head(['GET / HTTP/1.1', 'Host: app.test', 'X-A: a\x00b']), null],
  ])('%s', async (_name, data, code) => {
    const hits = up.hits;
    for (let i = 0; i < 4; i++) {
      const r = await rawHttp(p.port, data, 1500, 1);
      // uWS itself closes the connection on a few of these (no JS sees them); never a 5xx
      if (code !== null || r.statuses.length > 0) {
        expect(r.statuses[0], r.text).toBe(400);
        if (code !== null) expect(rawHeader(r.text, 'x-berth-error')).toBe(code);
      }
    }
    expect(up.hits).toBe(hits);
    await stillUp();
  });

  it('the upstream receives the validated Host, byte for byte', async () => {
    const r = await rawHttp(p.port, head(['GET /h HTTP/1.1', 'Host: App.Test:8080']), 1500, 1);
    expect(r.statuses[0]).toBe(200);
    const raw = JSON.parse(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)).raw as string[];
    expect(raw[raw.findIndex((v, i) => i % 2 === 0 && v.toLowerCase() === 'host') + 1]).toBe('App.Test:8080');
  });
});

describe('header bytes are forwarded as sent', () => {
  it('UTF-8 and Latin-1-range values arrive byte for byte (not cut at the first non-ASCII byte)', async () => {
    const value = Buffer.from('café ✓ naïve', 'utf8');
    const data = Buffer.concat([Buffer.from('GET /b HTTP/1.1\r\nHost: app.test\r\nX-Name: ', 'latin1'), value, Buffer.from(' x\r\n\r\n', 'latin1')]);
    const r = await rawHttp(p.port, data, 1500, 1);
    expect(r.statuses[0]).toBe(200);
    const raw = JSON.parse(Buffer.from(r.text.slice(r.text.indexOf('\r\n\r\n') + 4), 'latin1').toString('utf8')).raw as string[];
    const got = raw[raw.findIndex((v, i) => i % 2 === 0 && v.toLowerCase() === 'x-name') + 1];
    // node:http reads header bytes as Latin-1: compare bytes
    expect(Buffer.from(got, 'latin1').toString('hex')).toBe(Buffer.concat([value, Buffer.from(' x')]).toString('hex'));
  });
});

describe('client-caused errors never open the breaker', () => {
  it('an aborted upload does not count', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await rawHttp(p.port, head(['POST /up HTTP/1.1', 'Host: app.test', 'Content-Length: 100000']) + 'x'.repeat(100), 200);
      expect(r.statuses.length).toBe(0);
    }
    await waitFor(async () => (await endpointState()).failures === 0 && (await get(p, 'app.test')).status === 200);
    await stillUp();
  });

  it('a WebSocket upgrade the upstream answers with a plain 404 does not count', async () => {
    for (let i = 0; i < 5; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${p.port}/apps/app.test/ws`);
      await new Promise<void>((resolve) => { ws.onerror = () => resolve(); ws.onclose = () => resolve(); });
    }
    await stillUp();
  });

  it('a WebSocket upgrade the upstream client refuses to send (Expect: 100-continue) does not count', async () => {
    for (let i = 0; i < 5; i++) {
      await rawHttp(p.port, head(['GET /ws HTTP/1.1', 'Host: app.test', 'Upgrade: websocket', 'Connection: Upgrade',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', 'Expect: 100-continue']), 1000, 1);
    }
    await stillUp();
  });

  it('a WebSocket with duplicate subprotocols is a 400, and leaves no probe slot held', async () => {
    const r = await rawHttp(p.port, head(['GET /ws HTTP/1.1', 'Host: app.test', 'Upgrade: websocket', 'Connection: Upgrade',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Protocol: a, a']), 1500, 1);
    expect(r.statuses[0]).toBe(400);
    await stillUp();
  });
});

describe('no client can crash the proxy', () => {
  it('body bytes that arrive after the proxy answered (dead endpoint, breaker open, no endpoints) are dropped', async () => {
    const dead = await startUpstream('dead');
    const deadAddr = dead.address;
    await dead.close();
    const tbl = table([route('app', ['app.test'], [up.address], BREAKER), route('dead', ['dead.test'], [deadAddr], { circuitBreaker: { consecutiveFailures: 1, openMs: 60_000 } }),
      route('empty', ['empty.test'], [])], 5);
    expect((await putRoutes(p, tbl)).status).toBe(200);
    try {
      for (const host of ['dead.test', 'dead.test', 'empty.test', 'app.test']) {
        const data = host === 'app.test'
          // the upstream client refuses this request (DEL in a header value) after the proxy read its head
          ? head(['POST / HTTP/1.1', `Host: ${host}`, 'Content-Length: 100000', 'X-A: a\x7fb'])
          : head(['POST / HTTP/1.1', `Host: ${host}`, 'Content-Length: 100000']);
        const r = await new Promise<string>((resolve) => {
          const s = connect(p.port, '127.0.0.1');
          let out = '';
          s.on('data', (c: Buffer) => (out += c.toString('latin1')));
          s.on('error', () => {});
          s.write(data + 'x'.repeat(1000));
          setTimeout(() => s.write('y'.repeat(60_000)), 150);
          setTimeout(() => s.write('z'.repeat(39_000)), 300);
          setTimeout(() => { s.destroy(); resolve(out); }, 600);
        });
        expect(r).toMatch(/^HTTP\/1\.1 (400|502|503) /);
        expect(p.proc.exitCode, p.logs()).toBeNull();
      }
      expect((await get(p, 'app.test')).status).toBe(200);
    } finally {
      await putRoutes(p, table([route('app', ['app.test'], [up.address], BREAKER)], 6));
    }
  });
});

describe('HALF_OPEN probe slot', () => {
  it('is released when the probe is a WebSocket the proxy cannot open (the route recovers)', async () => {
    const flaky = await startUpstream('flaky');
    const addr = flaky.address;
    await flaky.close();
    const tbl = table([route('app', ['app.test'], [up.address], BREAKER), route('probe', ['probe.test'], [addr], { circuitBreaker: { consecutiveFailures: 1, openMs: 300 } })], 2);
    expect((await putRoutes(p, tbl)).status).toBe(200);
    try {
      // connect refused: the breaker opens (the retry finds no other endpoint: 503)
      expect((await get(p, 'probe.test')).status).toBeGreaterThanOrEqual(502);
      expect((await get(p, 'probe.test')).status).toBe(503);
      const back = await startUpstream('flaky', undefined, Number(addr.split(':')[1]));
      try {
        await new Promise((r) => setTimeout(r, 400)); // HALF_OPEN now
        // a WebSocket upgrade whose header the upstream client would throw on
        await rawHttp(p.port, head(['GET / HTTP/1.1', 'Host: probe.test', 'Upgrade: websocket', 'Connection: Upgrade',
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Protocol: a, a']), 1000, 1);
        // and an HTTP request the upstream client refuses
        await rawHttp(p.port, head(['GET / HTTP/1.1', 'Host: probe.test', 'X-A: a\x7fb']), 1000, 1);
        const r = await get(p, 'probe.test');
        expect(r.status).toBe(200);
      } finally {
        await back.close();
      }
    } finally {
      await putRoutes(p, table([route('app', ['app.test'], [up.address], BREAKER)], 3), adminToken(p));
    }
  });
});

describe('unsolicited informational responses', () => {
  let bad: Server;
  let badPort = 0;
  beforeAll(async () => {
    bad = createServer((c) => {
      c.on('data', (d: Buffer) => {
        const path = d.toString('latin1').split(' ')[1];
        if (path === '/100') c.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        else c.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n');
      });
      c.on('error', () => {});
    });
    bad.listen(0, '127.0.0.1');
    await once(bad, 'listening');
    badPort = (bad.address() as { port: number }).port;
  });
  afterAll(() => { bad.close(); });

  it('100 or 101 the proxy did not ask for: 502 upstream_protocol_error every time, not "circuit open"', async () => {
    const tbl = table([route('app', ['app.test'], [up.address], BREAKER), route('onexx', ['onexx.test'], [`127.0.0.1:${badPort}`], BREAKER)], 4);
    expect((await putRoutes(p, tbl)).status).toBe(200);
    for (const path of ['/100', '/101', '/100', '/101', '/100']) {
      const r = await get(p, 'onexx.test', path);
      expect(r.status, r.body).toBe(502);
      expect(r.headers['x-berth-error']).toBe('upstream_protocol_error');
    }
  });
});
