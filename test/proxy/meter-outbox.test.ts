import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { MAX_BATCHES, MAX_ENTRIES, MeterOutbox, MeterReporter, UPLOAD_ENTRIES } from '../../proxy/sync/meter-outbox.js';
import { METER_BUCKET_COUNT, type MeterEntry, type MeterUpload } from '../../shared/metering/schema.js';
import { EndpointMeter } from '../../proxy/metrics/meter.js';

/** The proxy's metering outbox: seqs never reused, persisted before sending, bounded without double counting. */
const log = pino({ level: 'silent' });
const dirs: string[] = [];
const dir = () => { const d = mkdtempSync(join(tmpdir(), 'berth-outbox-')); dirs.push(d); return d; };
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

const entry = (n: number, route = 'img-1', endpoint = 'c-1'): MeterEntry => ({
  route, endpoint, requests: n, status: [0, n, 0, 0, 0], proxyErrors: 0, buckets: new Array(METER_BUCKET_COUNT).fill(0), latencyMsSum: 0, bytesIn: 0, bytesOut: 0,
});
const requests = (box: MeterOutbox) => box.batches.reduce((s, b) => s + b.entries.reduce((t, e) => t + e.requests, 0), 0);

describe('meter outbox', () => {
  it('is bounded in entries too, merging the oldest unsent batches (counts kept): the whole outbox is written at each save', async () => {
    const box = await MeterOutbox.open(join(dir(), 'entries.json'), log);
    const pairs = (n: number) => Array.from({ length: 500 }, (_, k) => entry(n, `img-${k}`, 'c-1'));
    for (let i = 0; i < 400; i++) box.add(pairs(1), i, i + 1);
    expect(box.entries).toBeLessThanOrEqual(MAX_ENTRIES);
    expect(requests(box)).toBe(400 * 500);
  });

  it('a file that parses but holds no valid batches starts a new stream instead of failing every start', async () => {
    const file = join(dir(), 'corrupt.json');
    writeFileSync(file, JSON.stringify({ stream: 's', nextSeq: 2, batches: [null] }));
    const box = await MeterOutbox.open(file, log);
    expect(box.stream).not.toBe('s');
    expect(box.batches).toEqual([]);
  });

  it('numbers batches in one stream, combines worker entries, and keeps stream and seq across a restart', async () => {
    const file = join(dir(), 'proxy-metering.json');
    const a = await MeterOutbox.open(file, log);
    expect(a.add([], 0, 1)).toBe(false);
    expect(a.add([entry(2), entry(3), entry(1, 'img-1', 'c-2')], 0, 1000)).toBe(true);
    a.add([entry(4)], 1000, 2000);
    expect(a.batches.map((b) => b.seq)).toEqual([1, 2]);
    expect(a.batches[0].entries).toHaveLength(2);
    expect(a.batches[0].entries.find((e) => e.endpoint === 'c-1')!.requests).toBe(5);
    await a.save();
    expect(a.ack(1)).toBe(true);
    await a.save();
    const b = await MeterOutbox.open(file, log);
    expect(b.stream).toBe(a.stream);
    expect(b.batches.map((x) => x.seq)).toEqual([2]);
    b.add([entry(1)], 2000, 3000);
    expect(b.batches.map((x) => x.seq)).toEqual([2, 3]);
    expect(JSON.parse(readFileSync(file, 'utf8')).stream).toBe(a.stream);
  });

  it('past the bound merges only batches never uploaded (counts kept), never one that may already be applied', async () => {
    const box = await MeterOutbox.open(join(dir(), 'm.json'), log);
    for (let i = 0; i < 10; i++) box.add([entry(1)], i, i + 1);
    const up = box.nextUpload(); // 1..10 sent, answer unknown
    expect(up.map((b) => b.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for (let i = 0; i < MAX_BATCHES + 50; i++) box.add([entry(1)], 100 + i, 101 + i);
    expect(box.batches.length).toBeLessThanOrEqual(MAX_BATCHES);
    expect(requests(box)).toBe(10 + MAX_BATCHES + 50);
    // the ten uploaded batches are untouched, in order, with their own seqs
    expect(box.batches.slice(0, 10).map((b) => [b.seq, b.merged ?? 1])).toEqual(up.map((b) => [b.seq, 1]));
    expect(box.batches[10].merged).toBeGreaterThan(1);
    const seqs = box.batches.map((b) => b.seq);
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
    expect(box.takeMerged()).toBeGreaterThan(0);
  });

  it('keeps uploads bounded in entries (at least one batch each)', async () => {
    const box = await MeterOutbox.open(join(dir(), 'm.json'), log);
    const many = (n: number) => Array.from({ length: n }, (_, i) => entry(1, `img-${i + 1}`));
    box.add(many(UPLOAD_ENTRIES - 10), 0, 1);
    box.add(many(20), 1, 2);
    box.add(many(UPLOAD_ENTRIES + 5), 2, 3);
    expect(box.nextUpload().map((b) => b.seq)).toEqual([1]);
    box.ack(1);
    expect(box.nextUpload().map((b) => b.seq)).toEqual([2]);
    box.ack(2);
    expect(box.nextUpload().map((b) => b.seq)).toEqual([3]);
  });

  it('a meter counts without allocating and hands its counts over once', () => {
    const m = new EndpointMeter('img-1', 'c-1');
    m.count(200, false, 10, 20); m.count(503, true, 0, 5); m.count(404, false, 0, 0); m.count(101, false, 0, 0); m.count(302, false, 0, 0);
    m.observe(0.2); m.observe(7); m.observe(60_000);
    const e = m.take();
    expect(e).toMatchObject({ requests: 5, status: [1, 1, 1, 1, 1], proxyErrors: 1, bytesIn: 10, bytesOut: 25 });
    expect(e.buckets[0]).toBe(1);
    expect(e.buckets[4]).toBe(1);
    expect(e.buckets[METER_BUCKET_COUNT - 1]).toBe(1);
    expect(m.idle).toBe(true);
    expect(m.take().requests).toBe(0);
  });

  it('the reporter persists, uploads, drops what was acknowledged, and keeps everything while the control plane refuses', async () => {
    const got: MeterUpload[] = [];
    let acked = 0;
    let refuse = true;
    const srv = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => {
        if (refuse) { res.writeHead(503); res.end(); return; }
        const up = JSON.parse(b) as MeterUpload;
        got.push(up);
        for (const x of up.batches) if (x.seq > acked) acked = x.seq;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ stream: up.stream, acked }));
      });
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    try {
      const file = join(dir(), 'm.json');
      const box = await MeterOutbox.open(file, log);
      let n = 0;
      const r = new MeterReporter(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`, 't', box, async () => (n++ < 3 ? [entry(n)] : []), log, 60_000);
      await r.tick(); await r.tick(); await r.tick();
      expect(box.pending).toBe(3);
      expect(JSON.parse(readFileSync(file, 'utf8')).batches).toHaveLength(3);
      refuse = false;
      await r.tick();
      expect(box.pending).toBe(0);
      expect(got.flatMap((u) => u.batches.map((b) => b.seq))).toEqual([1, 2, 3]);
      expect(got.flatMap((u) => u.batches.flatMap((b) => b.entries.map((e) => e.requests)))).toEqual([1, 2, 3]);
      expect(JSON.parse(readFileSync(file, 'utf8')).batches).toHaveLength(0);
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });
});

describe('meter reporter and a control plane that refuses a batch (400)', () => {
  it('finds the refused batch, drops it alone and delivers the rest: the outbox is never wedged', async () => {
    const got: number[] = [];
    let acked = 0;
    const srv = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => {
        const up = JSON.parse(b) as MeterUpload;
        if (up.batches.some((x) => x.seq === 2)) { res.writeHead(400, { 'content-type': 'application/json' }); res.end('{"error":{"code":"metering_batch_refused"}}'); return; }
        for (const x of up.batches) { got.push(x.seq); if (x.seq > acked) acked = x.seq; }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ stream: up.stream, acked }));
      });
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    try {
      const box = await MeterOutbox.open(join(dir(), 'm.json'), log);
      for (let i = 1; i <= 4; i++) box.add([entry(i)], i * 1000, i * 1000 + 1000);
      const r = new MeterReporter(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`, 't', box, async () => [], log, 60_000);
      await r.tick();
      expect(box.pending).toBe(0);
      expect(got).toEqual([1, 3, 4]);
      expect(r.refused).toBe(1);
      // later batches go out together again
      box.add([entry(5)], 5000, 6000);
      box.add([entry(6)], 6000, 7000);
      await r.tick();
      expect(box.pending).toBe(0);
      expect(got).toEqual([1, 3, 4, 5, 6]);
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });
});
