import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { createHash } from 'node:crypto';
import { route, rss, startProxy, startUpstream, table, type ProxyProc, type Upstream } from './harness.js';

// Big enough that buffering would show plainly in RSS; small enough for a 2-core CI box.
const SIZE = 512 * 1024 * 1024;
const CHUNK = Buffer.alloc(256 * 1024, 120);
// A buffering proxy would grow by hundreds of MiB here. What remains is garbage awaiting GC:
// undici's 64 KiB socket reads are external memory, which V8 collects in batches of tens of MiB.
const MAX_GROWTH = 64 * 2 ** 20;

let sink: Upstream;
let source: Upstream;
let p: ProxyProc;

beforeAll(async () => {
  sink = await startUpstream('sink', (req, res) => {
    let n = 0;
    const h = createHash('sha1');
    req.on('data', (c: Buffer) => { n += c.length; h.update(c); });
    req.on('end', () => res.end(JSON.stringify({ bytes: n, sha1: h.digest('hex') })));
  });
  source = await startUpstream('source', (req, res) => {
    const chunked = req.url === '/chunked';
    res.writeHead(200, chunked ? {} : { 'content-length': String(SIZE) });
    let sent = 0;
    const pump = () => {
      while (sent < SIZE) {
        sent += CHUNK.length;
        if (!res.write(CHUNK)) { res.once('drain', pump); return; }
      }
      res.end();
    };
    pump();
  });
  p = await startProxy(table([route('sink', ['sink.test'], [sink.address]), route('source', ['source.test'], [source.address])]));
}, 60_000);
afterAll(async () => {
  await p?.stop();
  await sink?.close();
  await source?.close();
});

async function sampleRss(pid: number, during: Promise<unknown>): Promise<number> {
  let peak = 0;
  let done = false;
  void during.finally(() => (done = true));
  while (!done) {
    peak = Math.max(peak, await rss(pid));
    await new Promise((r) => setTimeout(r, 25));
  }
  return peak;
}

describe('streaming with backpressure', () => {
  it(`uploads ${SIZE / 2 ** 20} MiB without buffering it`, async () => {
    const before = await rss(p.proc.pid!);
    const h = createHash('sha1');
    async function* body() {
      for (let sent = 0; sent < SIZE; sent += CHUNK.length) { h.update(CHUNK); yield CHUNK; }
    }
    const req = request(`${p.url}/upload`, { method: 'POST', headers: { host: 'sink.test', 'content-length': String(SIZE) }, body: Readable.from(body()) })
      .then(async (r) => JSON.parse(await r.body.text()) as { bytes: number; sha1: string });
    const peak = await sampleRss(p.proc.pid!, req);
    const res = await req;
    expect(res.bytes).toBe(SIZE);
    expect(res.sha1).toBe(h.digest('hex'));
    console.log(`upload: proxy RSS before ${(before / 2 ** 20).toFixed(1)} MiB, peak ${(peak / 2 ** 20).toFixed(1)} MiB`);
    expect(peak - before).toBeLessThan(MAX_GROWTH);
  }, 120_000);

  it.each(['/length', '/chunked'])(`downloads ${SIZE / 2 ** 20} MiB (%s) to a slow reader without buffering it`, async (path) => {
    const before = await rss(p.proc.pid!);
    const run = (async () => {
      const r = await request(`${p.url}${path}`, { headers: { host: 'source.test' } });
      let n = 0;
      let i = 0;
      for await (const c of r.body) {
        n += (c as Buffer).length;
        // a slow reader for the first part: backpressure must reach the upstream
        if (++i < 200 && i % 20 === 0) await new Promise((res) => setTimeout(res, 20));
      }
      return { n, te: r.headers['transfer-encoding'] };
    })();
    const peak = await sampleRss(p.proc.pid!, run);
    const { n, te } = await run;
    expect(n).toBe(SIZE);
    expect(te === 'chunked').toBe(path === '/chunked');
    console.log(`download ${path}: proxy RSS before ${(before / 2 ** 20).toFixed(1)} MiB, peak ${(peak / 2 ** 20).toFixed(1)} MiB`);
    expect(peak - before).toBeLessThan(MAX_GROWTH);
  }, 120_000);
});
