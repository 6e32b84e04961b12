/**
 * Pipelining to upstreams (RouteSpec.pipeline): bodiless GET/HEAD requests of one event-loop turn
 * share an upstream connection and go out in one write; every client still gets its own answer,
 * in order, when answers are HEAD-framed, when the upstream closes after an answer, and when
 * clients leave in the middle. The upstream here is a raw TCP server that records how many
 * requests each read brought (the pipelining depth it saw) and answers strictly in order.
 */
import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { putRoutes, route, startProxy, table, type ProxyProc } from './harness.js';

interface RawUpstream {
  address: string;
  connections: number;
  requests: number;
  /** most requests one connection had received and not yet answered */
  maxDepth: number;
  /** reads that brought requests for more than one Host */
  mixedReads: number;
  /** paths of the requests held back by `frontOfBatch` */
  held: string[];
  close(): Promise<void>;
}

/**
 * Answers `GET /x` with body `/x` (HEAD: the same head, no body), in order, each after `delayMs`.
 * `closeAfterFirst`: answers the first request of a connection with Connection: close and ends it;
 * `endAfterFirst`: the same without saying so (a keep-alive answer, then the connection ends).
 * `frontOfBatch`: the first request of a read that brought several is answered slowly (its head
 * after 1.5 s), as a 1.5 s chunked stream, or with its head at once and its (known-length) body
 * trickled over 1.5 s. `surplus`: bytes sent after the first answer of each connection, beyond
 * its Content-Length (a mis-framing app).
 */
async function rawUpstream(opts: { delayMs?: number; closeAfterFirst?: boolean; endAfterFirst?: boolean; frontOfBatch?: 'slow' | 'stream' | 'trickle'; bodyBytes?: number; surplus?: string } = {}): Promise<RawUpstream> {
  const sockets = new Set<Socket>();
  const up = { address: '', connections: 0, requests: 0, maxDepth: 0, mixedReads: 0, held: [] } as unknown as RawUpstream;
  const srv = createServer((c) => {
    up.connections++;
    sockets.add(c);
    let buf = '';
    let waiting: Array<{ head: string; front: boolean }> = [];
    let busy = false;
    let answered = 0;
    let ended = false;
    const answerNext = (): void => {
      if (busy || waiting.length === 0 || ended) return;
      busy = true;
      const { head, front } = waiting.shift()!;
      const [method, path] = head.split(' ');
      const done = (): void => {
        busy = false;
        answerNext();
      };
      if (front && opts.frontOfBatch !== undefined) up.held.push(path);
      if (front && opts.frontOfBatch === 'trickle') {
        c.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${path.length}\r\n\r\n`);
        let sent = 0;
        const t = setInterval(() => {
          if (c.destroyed) return clearInterval(t);
          c.write(path[sent++]);
          if (sent >= path.length) {
            clearInterval(t);
            done();
          }
        }, Math.ceil(1500 / path.length));
        return;
      }
      if (front && opts.frontOfBatch === 'stream') {
        c.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n');
        let sent = 0;
        const t = setInterval(() => {
          if (c.destroyed) return clearInterval(t);
          const piece = path[sent++];
          if (piece !== undefined && sent <= path.length) c.write(`1\r\n${piece}\r\n`);
          if (sent >= path.length) {
            clearInterval(t);
            c.write('0\r\n\r\n');
            done();
          }
        }, Math.ceil(1500 / path.length));
        return;
      }
      setTimeout(() => {
        if (ended || c.destroyed) return;
        const close = opts.closeAfterFirst === true && answered === 0;
        const end = opts.endAfterFirst === true && answered === 0;
        answered++;
        const body = opts.bodyBytes === undefined ? path : path.padEnd(opts.bodyBytes, '.');
        const surplus = opts.surplus !== undefined && answered === 1 ? opts.surplus : '';
        c.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${close ? 'connection: close\r\n' : ''}\r\n${method === 'HEAD' ? '' : body}${surplus}`);
        if (close || end) {
          ended = true;
          waiting = [];
          c.end();
          return;
        }
        done();
      }, front && opts.frontOfBatch === 'slow' ? 1500 : opts.delayMs ?? 0);
    };
    c.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const heads: string[] = [];
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        heads.push(buf.slice(0, end));
        buf = buf.slice(end + 4);
        up.requests++;
      }
      const hosts = new Set(heads.map((h) => /\r\nhost: ([^\r]*)/i.exec(h)?.[1]));
      if (hosts.size > 1) up.mixedReads++;
      heads.forEach((head, i) => waiting.push({ head, front: i === 0 && heads.length > 1 && !busy && waiting.length === 0 }));
      up.maxDepth = Math.max(up.maxDepth, waiting.length + (busy ? 1 : 0));
      answerNext();
    });
    c.on('close', () => sockets.delete(c));
    c.on('error', () => {});
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  up.address = `127.0.0.1:${(srv.address() as { port: number }).port}`;
  up.close = () => new Promise<void>((r) => {
    for (const c of sockets) c.destroy();
    srv.close(() => r());
  });
  return up;
}

interface Answer { status: number; body: string }

/** A keep-alive client connection that sends one request at a time and reads its answer. */
class Client {
  private readonly socket: Socket;
  private data = Buffer.alloc(0);
  private waiter: ((a: Answer) => void) | null = null;
  private head = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.data = Buffer.concat([this.data, d]);
      this.parse();
    });
    socket.on('error', () => {});
  }

  static async open(port: number): Promise<Client> {
    const s = connect(port, '127.0.0.1');
    await once(s, 'connect');
    return new Client(s);
  }

  send(host: string, path: string, method = 'GET'): Promise<Answer> {
    this.head = method === 'HEAD';
    const p = new Promise<Answer>((resolve) => (this.waiter = resolve));
    this.socket.write(`${method} ${path} HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
    return p;
  }

  private parse(): void {
    const end = this.data.indexOf('\r\n\r\n');
    if (end === -1 || this.waiter === null) return;
    const head = this.data.subarray(0, end).toString('latin1');
    let body = '';
    if (!this.head && /\r\ntransfer-encoding: chunked/i.test(head)) {
      // chunked: sizes and data up to the last chunk
      let p = end + 4;
      for (;;) {
        const eol = this.data.indexOf('\r\n', p);
        if (eol === -1) return;
        const size = parseInt(this.data.subarray(p, eol).toString('latin1'), 16);
        if (size === 0) {
          if (this.data.length < eol + 4) return;
          p = eol + 4;
          break;
        }
        if (this.data.length < eol + 2 + size + 2) return;
        body += this.data.subarray(eol + 2, eol + 2 + size).toString('latin1');
        p = eol + 2 + size + 2;
      }
      this.data = this.data.subarray(p);
    } else {
      const m = /\r\ncontent-length: (\d+)/i.exec(head);
      const len = this.head || m === null ? 0 : Number(m[1]);
      if (this.data.length < end + 4 + len) return;
      body = this.data.subarray(end + 4, end + 4 + len).toString('latin1');
      this.data = this.data.subarray(end + 4 + len);
    }
    const w = this.waiter;
    this.waiter = null;
    w({ status: Number(head.split(' ')[1]), body });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

let p: ProxyProc;
const clients: Client[] = [];
const ups: RawUpstream[] = [];

beforeAll(async () => {
  p = await startProxy(table([]));
  for (let i = 0; i < 32; i++) clients.push(await Client.open(p.port));
});
afterAll(async () => {
  for (const c of clients) c.destroy();
  await p.stop();
});
afterEach(async () => {
  while (ups.length) await ups.pop()!.close();
});

async function useRoutes(...routes: object[]): Promise<void> {
  const r = await putRoutes(p, table(routes, Date.now()));
  expect(r.status, r.body).toBe(200);
}

/** `rounds` times: every client sends a request in the same synchronous loop; all answers checked. */
async function burst(host: string, rounds: number, method = (_i: number) => 'GET'): Promise<void> {
  for (let r = 0; r < rounds; r++) {
    const sent = clients.map((c, i) => ({ path: `/r${r}/c${i}`, method: method(i), answer: c.send(host, `/r${r}/c${i}`, method(i)) }));
    for (const s of sent) {
      const a = await s.answer;
      expect(a.status).toBe(200);
      expect(a.body).toBe(s.method === 'HEAD' ? '' : s.path);
    }
  }
}

/**
 * The route of pipe.test, under a new id each time: what a route learns about its answers (their
 * size, a stall) stays with its id, and each test starts afresh.
 */
let pipeId = '';
let pipes = 0;
function pipeRoute(up: RawUpstream, extra: object): object {
  pipeId = `pipe-${++pipes}`;
  return route(pipeId, ['pipe.test'], [up.address], extra);
}

async function resentTotal(): Promise<number> {
  const text = await (await fetch(`${p.admin}/metrics`)).text();
  const m = new RegExp(`berth_proxy_pipeline_resent_total\\{route="${pipeId}"\\} (\\d+)`).exec(text);
  return m === null ? 0 : Number(m[1]);
}

describe('pipelining to upstreams', () => {
  it('requests of one turn share a connection, up to the route\'s depth, and every client gets its own answer', async () => {
    const up = await rawUpstream();
    ups.push(up);
    await useRoutes(pipeRoute(up, { pipeline: 4 }));
    await burst('pipe.test', 20);
    expect(up.requests).toBe(20 * clients.length);
    expect(up.maxDepth).toBeGreaterThanOrEqual(2);
    expect(up.maxDepth).toBeLessThanOrEqual(4);
  });

  it('a route without `pipeline` never pipelines', async () => {
    const up = await rawUpstream();
    ups.push(up);
    await useRoutes(route('plain', ['plain.test'], [up.address]));
    await burst('plain.test', 10);
    expect(up.maxDepth).toBe(1);
  });

  it('HEAD requests go alone (apps get their framing wrong most often); the GETs around them are pipelined and stay framed', async () => {
    const up = await rawUpstream();
    ups.push(up);
    await useRoutes(pipeRoute(up, { pipeline: 8 }));
    await burst('pipe.test', 20, (i) => (i % 3 === 0 ? 'HEAD' : 'GET'));
    expect(up.maxDepth).toBeGreaterThanOrEqual(2);
  });

  // upstreams that cut a batch short: every client still gets its own answer (burst checks each),
  // the requests behind are sent again (counted), and no retry policy is needed for it
  it.each([
    ['closes after each first answer, saying so (Connection: close)', { closeAfterFirst: true }],
    ['ends the connection after a keep-alive first answer (the next in line is resent too, not failed)', { endAfterFirst: true }],
    ['sends more than its Content-Length (the garbage never reaches the next client)', { surplus: 'GARBAGE FROM THE APP\r\n\r\n' }],
  ] as const)('an upstream that %s', async (_what, opts) => {
    const up = await rawUpstream(opts);
    ups.push(up);
    await useRoutes(pipeRoute(up, { pipeline: 8, retry: { attempts: 0 } }));
    const before = await resentTotal();
    await burst('pipe.test', 10);
    expect(up.maxDepth).toBeGreaterThanOrEqual(2);
    expect(await resentTotal()).toBeGreaterThan(before);
  });

  const fronts = { slow: 'a slow answer (no head after 0.5 s)', stream: 'a streamed answer (chunked, 1.5 s)', trickle: 'an answer whose small body trickles (1.5 s)' };
  for (const front of ['slow', 'stream', 'trickle'] as const) {
    it(`requests behind ${fronts[front]} are sent again instead of waiting for it`, async () => {
      const up = await rawUpstream({ frontOfBatch: front });
      ups.push(up);
      await useRoutes(pipeRoute(up, { pipeline: 8 }));
      const before = await resentTotal();
      const started = Date.now();
      const sent = clients.map((c, i) => {
        const path = `/${front}/c${i}`;
        return c.send('pipe.test', path).then((a) => ({ path, a, ms: Date.now() - started }));
      });
      const answers = await Promise.all(sent);
      for (const { path, a } of answers) {
        expect(a.status).toBe(200);
        expect(a.body).toBe(path);
      }
      expect(up.maxDepth).toBeGreaterThanOrEqual(2);
      expect(await resentTotal()).toBeGreaterThan(before);
      // the answers the upstream held back took 1.5 s; none of the others waited for them
      expect(up.held.length).toBeGreaterThan(0);
      for (const x of answers) {
        if (up.held.includes(x.path)) expect(x.ms).toBeGreaterThanOrEqual(1400);
        else expect(x.ms, `${x.path} waited`).toBeLessThan(1000);
      }
    });
  }

  it('a stall pauses the route\'s pipelining: the next requests go alone, and wait behind nothing', async () => {
    const up = await rawUpstream({ frontOfBatch: 'slow' });
    ups.push(up);
    await useRoutes(pipeRoute(up, { pipeline: 8 }));
    const before = await resentTotal();
    const first = await Promise.all(clients.map((c, i) => c.send('pipe.test', `/first/c${i}`)));
    expect(first.map((a) => a.status)).toEqual(clients.map(() => 200));
    expect(up.held.length).toBeGreaterThan(0);
    const resent = await resentTotal();
    expect(resent).toBeGreaterThan(before);
    // within PIPELINE_PAUSE_MS of the stall: one request per upstream read, nothing resent, and
    // nothing held back (this upstream is slow only to the first request of a batch)
    up.maxDepth = 0;
    up.held.length = 0;
    for (let r = 0; r < 3; r++) {
      const started = Date.now();
      const answers = await Promise.all(clients.map((c, i) => c.send('pipe.test', `/then${r}/c${i}`)));
      for (let i = 0; i < answers.length; i++) expect(answers[i].body).toBe(`/then${r}/c${i}`);
      expect(Date.now() - started).toBeLessThan(1000);
    }
    expect(up.maxDepth).toBe(1);
    expect(up.held).toEqual([]);
    expect(await resentTotal()).toBe(resent);
  });

  it('a route whose answers are large stops pipelining (they would only wait behind each other)', async () => {
    const up = await rawUpstream({ bodyBytes: 48 * 1024 });
    ups.push(up);
    await useRoutes(pipeRoute(up, { pipeline: 8 }));
    for (let i = 0; i < 12; i++) expect((await clients[0].send('pipe.test', `/warm${i}`)).body.length).toBe(48 * 1024);
    up.maxDepth = 0;
    for (let r = 0; r < 5; r++) {
      const sent = clients.map((c, i) => ({ path: `/r${r}/c${i}`, answer: c.send('pipe.test', `/r${r}/c${i}`) }));
      for (const s of sent) {
        const a = await s.answer;
        expect(a.body.length).toBe(48 * 1024);
        expect(a.body.startsWith(`${s.path}.`)).toBe(true);
      }
    }
    expect(up.maxDepth).toBe(1);
  });

  it('requests of different routes on the same address never share a batch', async () => {
    const up = await rawUpstream();
    ups.push(up);
    await useRoutes(pipeRoute(up, { pipeline: 8 }), route('other', ['other.test'], [up.address], { pipeline: 8 }));
    for (let r = 0; r < 20; r++) {
      const sent = clients.map((c, i) => {
        const host = i < clients.length / 2 ? 'pipe.test' : 'other.test';
        return c.send(host, `/r${r}/c${i}`).then((a) => expect(a.body).toBe(`/r${r}/c${i}`));
      });
      await Promise.all(sent);
    }
    expect(up.maxDepth).toBeGreaterThanOrEqual(2);
    expect(up.mixedReads).toBe(0);
  });

  it('clients that leave while their answers are pending cost the others nothing', async () => {
    const up = await rawUpstream({ delayMs: 30 });
    ups.push(up);
    await useRoutes(pipeRoute(up, { pipeline: 8 }));
    const leaving = await Promise.all(Array.from({ length: 16 }, () => Client.open(p.port)));
    for (let r = 0; r < 5; r++) {
      const sent = clients.map((c, i) => ({ path: `/r${r}/c${i}`, answer: c.send('pipe.test', `/r${r}/c${i}`) }));
      if (r === 0) for (const c of leaving) void c.send('pipe.test', '/gone');
      await new Promise((res) => setTimeout(res, 10));
      if (r === 0) for (const c of leaving) c.destroy();
      for (const s of sent) expect((await s.answer).body).toBe(s.path);
    }
    expect(up.maxDepth).toBeGreaterThanOrEqual(2);
  });

  it('the depth is validated: 0 and 17 are refused', async () => {
    for (const pipeline of [0, 17, 2.5]) {
      const r = await putRoutes(p, table([route('bad', ['bad.test'], ['127.0.0.1:1'], { pipeline })], Date.now()));
      expect(r.status).toBe(400);
    }
  });
});
