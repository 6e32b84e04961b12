import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { request } from 'undici';
import { get, route, startProxy, startUpstream, table, type ProxyProc, type Upstream } from './harness.js';

let up: Upstream;
let special: Upstream;
let p: ProxyProc;

beforeAll(async () => {
  up = await startUpstream('echo');
  special = await startUpstream('special', (req, res) => {
    const u = req.url ?? '/';
    if (u === '/hop') {
      res.writeHead(200, { connection: 'keep-alive, x-internal', 'x-internal': 'secret', 'keep-alive': 'timeout=5', 'proxy-authenticate': 'x', 'x-kept': 'yes' });
      return res.end('hop');
    }
    if (u === '/204') { res.writeHead(204, { 'x-kept': 'yes' }); return res.end(); }
    if (u === '/304') { res.writeHead(304, { etag: '"v1"' }); return res.end(); }
    if (u === '/chunked') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('part1-');
      setTimeout(() => { res.write('part2-'); res.end('end'); }, 20);
      return;
    }
    if (u === '/length') { res.writeHead(200, { 'content-length': '5' }); return res.end('hello'); }
    if (u === '/sw.js') { res.writeHead(200, { 'Service-Worker-Allowed': '/', 'content-type': 'text/javascript', 'x-kept': 'yes' }); return res.end('// sw'); }
    if (u === '/status/418') { res.writeHead(418); return res.end('teapot'); }
    if (u === '/multi-cookie') { res.setHeader('set-cookie', ['a=1', 'b=2']); return res.end('ok'); }
    if (u === '/session') { res.setHeader('set-cookie', ['a=1', ' berth_session=planted; Path=/api', 'b=2', 'berth_device=planted; Path=/api/auth/login',
      // nameless: a browser sends back `berth_session` and `berth_session=x` (a lockout, a planted session)
      'berth_session; Path=/api', '=berth_session=x; Path=/api', '=berth_device=y']); return res.end(req.headers.cookie ?? '(none)'); }
    res.end('default');
  });
  p = await startProxy(table([
    route('echo', ['shop.example.com', '*.wild.example.com'], [up.address]),
    route('special', ['special.test'], [special.address]),
  ]), ['--apps-path-hosts', 'Berth.Example.NET,localhost.example']);
});
afterAll(async () => {
  await p?.stop();
  await up?.close();
  await special?.close();
});

describe('routing', () => {
  it.each(['shop.example.com', 'Shop.Example.COM:8080', 'shop.example.com.', 'SHOP.EXAMPLE.COM.:80'])('Host %s reaches the route', async (h) => {
    const r = await get(p, h, '/x?y=1');
    expect(r.status).toBe(200);
    const body = JSON.parse(r.body);
    expect(body.url).toBe('/x?y=1');
    expect(body.name).toBe('echo');
  });
  it('matches wildcards at any depth', async () => {
    expect((await get(p, 'a.b.wild.example.com')).status).toBe(200);
    expect((await get(p, 'wild.example.com')).status).toBe(404);
  });
  it('serves /apps/{host}/{path} for people without DNS, on the proxy\'s own address', async () => {
    const r = await get(p, '127.0.0.1', '/apps/shop.example.com/deep/path?q=1');
    expect(r.status).toBe(200);
    const body = JSON.parse(r.body);
    expect(body.url).toBe('/deep/path?q=1');
    expect(body.headers.host).toBe('shop.example.com');
    for (const h of ['localhost', 'LOCALHOST:8080', '127.0.0.1:8080', '[::1]:8080', '10.1.2.3', 'berth.example.net', 'Berth.Example.Net.:443', 'localhost.example']) {
      expect((await get(p, h, '/apps/shop.example.com')).status, h).toBe(200);
      expect((await get(p, h, '/apps/special.test/length')).body, h).toBe('hello');
    }
  });
  it('on /apps/{host}/ the control plane\'s sign-in cookie neither reaches the app nor is set by it (nor its device cookie, nor a nameless one); on its own name, cookies pass', async () => {
    const via = await get(p, '127.0.0.1:8080', '/apps/special.test/session', { headers: { cookie: 'x=1; berth_session=secret; y=2' } });
    expect(via.status).toBe(200);
    expect(via.body).toBe('x=1; y=2');
    expect(via.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    const alone = await get(p, 'localhost', '/apps/special.test/session', { headers: { cookie: 'berth_session=secret' } });
    expect(alone.body).toBe('(none)');
    const own = await get(p, 'special.test', '/session', { headers: { cookie: 'x=1; berth_session=other' } });
    expect(own.body).toBe('x=1; berth_session=other');
    expect(own.headers['set-cookie']).toHaveLength(7);
  });
  it('/apps/{host}/ on any other name is that name\'s own path: 404, not an app in an origin an app may claim later', async () => {
    for (const h of ['unclaimed.example.com', 'x', 'a.berth.example.net', 'localhost.evil', 'example.net', '127.0.0.1.nip.io']) {
      const r = await get(p, h, '/apps/shop.example.com/x');
      expect(r.status, h).toBe(404);
      expect(r.headers['x-berth-error']).toBe('no_route');
      expect(r.body).toContain('--apps-path-hosts');
    }
  });
  it('/apps/ without a hostname on the proxy\'s own address says the path names no app', async () => {
    for (const [h, path] of [['127.0.0.1', '/apps/'], ['localhost', '/apps'], ['berth.example.net', '/apps/']]) {
      const r = await get(p, h, path);
      expect([r.status, r.body.split('\n')[0]], `${h}${path}`)
        .toEqual([404, '404 no_route: no app hostname in the path: /apps/{host}/ names one, as in /apps/hello.example.com/']);
    }
  });
  it('/apps/{host}/ on a Host that names an app is that app\'s own path: no app is served in another\'s origin', async () => {
    // (else https://shop.example.com/apps/special.test/ would run special.test's script as shop.example.com)
    for (const h of ['shop.example.com', 'Shop.Example.com:443', 'x.wild.example.com']) {
      const r = await get(p, h, '/apps/special.test/length?q=1');
      expect(r.status, h).toBe(200);
      const body = JSON.parse(r.body);
      expect(body.name).toBe('echo');
      expect(body.url).toBe('/apps/special.test/length?q=1');
    }
    // (WebSocket upgrades go through the same admit())
  });
  it('an answer reached by /apps/{host}/ loses Service-Worker-Allowed: a service worker it installs controls that path only', async () => {
    const direct = await get(p, 'special.test', '/sw.js');
    expect(direct.headers['service-worker-allowed']).toBe('/');
    for (const h of ['127.0.0.1:8080', 'berth.example.net']) {
      const viaPath = await get(p, h, '/apps/special.test/sw.js');
      expect(viaPath.status, h).toBe(200);
      expect(viaPath.body).toBe('// sw');
      expect(viaPath.headers['service-worker-allowed'], h).toBeUndefined();
      expect(viaPath.headers['x-kept']).toBe('yes');
      expect(viaPath.headers['content-type']).toBe('text/javascript');
    }
  });
  it('answers 404 with x-berth-error and a request id for unknown hosts', async () => {
    const r = await get(p, 'nope.example.org');
    expect(r.status).toBe(404);
    expect(r.headers['x-berth-error']).toBe('no_route');
    expect(r.headers['x-request-id']).toBeTruthy();
    expect(r.body).toContain('nope.example.org');
  });
});

describe('forwarding headers', () => {
  it('adds X-Forwarded-*, Via, keeps the Host and drops hop-by-hop request headers and the forwarding headers a client sets', async () => {
    const r = await get(p, 'shop.example.com', '/', {
      headers: {
        'proxy-authorization': 'Basic x', 'x-forwarded-for': '10.0.0.1', via: '1.0 other', 'x-keep': 'k',
        // a client claiming another address, host, port or prefix (frameworks believe these)
        forwarded: 'for=127.0.0.1;host=evil.example;proto=https', 'x-real-ip': '127.0.0.1', 'x-forwarded-port': '443',
        'x-forwarded-prefix': '/admin', 'x-forwarded-server': 'evil', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https',
        'x-forwarded-ssl': 'on', 'x-forwarded-scheme': 'https', 'x-client-ip': '127.0.0.1', 'client-ip': '127.0.0.1', 'true-client-ip': '127.0.0.1',
        'cf-connecting-ip': '127.0.0.1', 'x-cluster-client-ip': '127.0.0.1',
      },
    });
    const h = JSON.parse(r.body).headers;
    expect(h['x-forwarded-for']).toBe('10.0.0.1, 127.0.0.1');
    expect(h['x-forwarded-host']).toBe('shop.example.com');
    expect(h['x-forwarded-proto']).toBe('http');
    expect(h.via).toBe('1.0 other, 1.1 berth');
    expect(h.host).toBe('shop.example.com');
    expect(h['x-keep']).toBe('k');
    expect(h['proxy-authorization']).toBeUndefined();
    for (const n of ['forwarded', 'x-real-ip', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-server', 'x-forwarded-ssl', 'x-forwarded-scheme',
      'x-client-ip', 'client-ip', 'true-client-ip', 'cf-connecting-ip', 'x-cluster-client-ip']) expect(h[n], n).toBeUndefined();
  });
  it('keeps a client x-request-id and returns it; creates one otherwise', async () => {
    const r = await get(p, 'shop.example.com', '/', { headers: { 'x-request-id': 'abc-123' } });
    expect(r.headers['x-request-id']).toBe('abc-123');
    expect(JSON.parse(r.body).headers['x-request-id']).toBe('abc-123');
    const r2 = await get(p, 'shop.example.com');
    expect(r2.headers['x-request-id']).toMatch(/^[0-9a-f]{12}-/);
    expect(JSON.parse(r2.body).headers['x-request-id']).toBe(r2.headers['x-request-id']);
  });
  it('drops hop-by-hop response headers including those named by Connection', async () => {
    const r = await get(p, 'special.test', '/hop');
    expect(r.body).toBe('hop');
    expect(r.headers['x-kept']).toBe('yes');
    expect(r.headers['x-internal']).toBeUndefined();
    expect(r.headers['keep-alive']).toBeUndefined();
    expect(r.headers['proxy-authenticate']).toBeUndefined();
  });
  it('passes repeated headers (Set-Cookie) through', async () => {
    const r = await get(p, 'special.test', '/multi-cookie');
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
  });
  it('passes status codes through', async () => {
    const r = await get(p, 'special.test', '/status/418');
    expect(r.status).toBe(418);
    expect(r.body).toBe('teapot');
  });
});

describe('bodies', () => {
  it('HEAD, 204 and 304 carry no body', async () => {
    const h = await get(p, 'special.test', '/length', { method: 'HEAD' });
    expect(h.status).toBe(200);
    expect(h.body).toBe('');
    expect(h.headers['content-length']).toBe('5');
    const n = await get(p, 'special.test', '/204');
    expect(n.status).toBe(204);
    expect(n.body).toBe('');
    expect(n.headers['x-kept']).toBe('yes');
    const nm = await get(p, 'special.test', '/304');
    expect(nm.status).toBe(304);
    expect(nm.headers.etag).toBe('"v1"');
  });
  it('chunked out: an upstream stream without length reaches the client chunked', async () => {
    const r = await request(`${p.url}/chunked`, { headers: { host: 'special.test' } });
    expect(r.headers['transfer-encoding']).toBe('chunked');
    expect(await r.body.text()).toBe('part1-part2-end');
  });
  it('chunked in: a chunked upload reaches the upstream whole', async () => {
    async function* gen() { for (let i = 0; i < 10; i++) yield Buffer.alloc(1000, 97); }
    const r = await request(`${p.url}/up`, { method: 'POST', headers: { host: 'shop.example.com' }, body: Readable.from(gen()) });
    expect(JSON.parse(await r.body.text()).bytes).toBe(10_000);
  });
  it('a POST with content-length is forwarded with its length', async () => {
    const r = await get(p, 'shop.example.com', '/post', { method: 'POST', body: 'x'.repeat(12345) });
    const b = JSON.parse(r.body);
    expect(b.bytes).toBe(12345);
    expect(b.headers['content-length']).toBe('12345');
  });
});

describe('robustness', () => {
  function raw(data: string): Promise<string> {
    return new Promise((resolve) => {
      const s = connect(p.port, '127.0.0.1');
      let out = '';
      s.on('data', (c) => (out += c.toString()));
      s.on('close', () => resolve(out));
      s.on('error', () => resolve(out));
      s.write(data);
      setTimeout(() => s.destroy(), 500);
    });
  }
  it('survives malformed HTTP on a raw socket', async () => {
    await raw('GARBAGE\r\n\r\n');
    await raw('GET / HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: abc\r\n\r\n');
    await raw('GET / HTTP/1.1\r\n' + 'X: ' + 'a'.repeat(100_000) + '\r\n\r\n');
    await raw('\x00\x01\x02\x03');
    await raw('GET / HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n');
    await raw('GET /%zz HTTP/1.1\r\nHost: shop.example.com\r\n\r\n');
    const r = await get(p, 'shop.example.com');
    expect(r.status).toBe(200);
    expect(p.proc.exitCode).toBeNull();
  });
  it('answers 400 when the Host is empty', async () => {
    const out = await raw('GET / HTTP/1.1\r\nHost: \r\n\r\n');
    expect(out).toMatch(/^HTTP\/1.1 400/);
    expect(out).toContain('x-berth-error: missing_host');
  });
  it('drops Keep-Alive, TE, Upgrade and Proxy-Connection request headers', async () => {
    const out = await raw('GET /raw HTTP/1.1\r\nHost: shop.example.com\r\nConnection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Other: 1\r\n\r\n');
    const json = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1));
    expect(json.headers['x-drop-me']).toBeUndefined();
    expect(json.headers['x-other']).toBe('1');
    expect(json.headers['keep-alive']).toBeUndefined();
    expect(json.headers.te).toBeUndefined();
    expect(json.headers['proxy-connection']).toBeUndefined();
    expect(json.headers.upgrade).toBeUndefined();
  });
});
