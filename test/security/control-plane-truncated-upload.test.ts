import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { appFiles, makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * Truncated multipart bodies on POST /api/images: a Content-Length larger than what is sent
 * (then the client closes, or just stalls and goes away), a body cut in the middle of a part, a
 * body without its closing boundary (with Content-Length or chunked). While the socket is open
 * the answer is 400 in the API's error shape — never 500 —, and nothing stays behind: no upload
 * file, no staging directory, no image row, and the process keeps serving.
 */
let t: TestControlPlane;
let api: Api;
let u: Api;
let archive: Buffer;
let seq = 0;
const BOUNDARY = '----berthTruncated' + randomBytes(6).toString('hex');

beforeAll(async () => {
  // a large archive (random, so it does not compress) makes "cut in the middle of the file" real
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', maxUploadBytes: 8 * 1024 * 1024 });
  api = new Api(t.cp.url);
  u = await api.signup('truncated@example.com');
  archive = await makeTar([...appFiles(), { name: 'www/blob.bin', content: randomBytes(1024 * 1024) }]);
});

afterAll(async () => {
  await t?.close();
});

/** A complete multipart body for a valid upload. */
function body(): Buffer {
  const host = `trunc-${++seq}.example.com`;
  const field = (name: string, value: string) => `--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  return Buffer.concat([
    Buffer.from(field('name', 'trunc') + field('app_hostname', host)),
    Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="src.tar"\r\nContent-Type: application/x-tar\r\n\r\n`),
    archive,
    Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
  ]);
}

function head(opts: { contentLength?: number; chunked?: boolean }): string {
  const u0 = new URL(t.cp.url);
  return `POST /api/images HTTP/1.1\r\nHost: ${u0.host}\r\nAuthorization: Bearer ${u.token}\r\n` +
    `Content-Type: multipart/form-data; boundary=${BOUNDARY}\r\nConnection: close\r\n` +
    (opts.chunked ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${opts.contentLength}\r\n`) + '\r\n';
}

interface Raw { socket: Socket; response: Promise<string>; closed: Promise<void> }

function open(): Promise<Raw> {
  const u0 = new URL(t.cp.url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: u0.hostname, port: Number(u0.port) }, () => {
      let text = '';
      socket.setEncoding('latin1');
      socket.on('data', (d) => { text += d; });
      const closed = new Promise<void>((r) => socket.on('close', () => r()));
      const response = closed.then(() => text);
      socket.on('error', () => {});
      resolve({ socket, response, closed });
    });
    socket.on('error', reject);
  });
}

/** Status line and JSON body of a raw HTTP/1.1 response. */
function parse(text: string): { status: number; json: any } {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  const i = text.indexOf('\r\n\r\n');
  let payload = i >= 0 ? text.slice(i + 4) : '';
  if (/\r\ntransfer-encoding: chunked/i.test(text.slice(0, i))) payload = payload.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '');
  let json: any;
  try { json = JSON.parse(payload); } catch { /* none */ }
  return { status: m ? Number(m[1]) : 0, json };
}

async function until(cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Upload files and staging dirs left on disk. */
async function leftovers(): Promise<string[]> {
  const dir = t.cp.config.dataDir;
  const ups = (await readdir(join(dir, 'uploads')).catch(() => [] as string[])).map((n) => `uploads/${n}`);
  const builds: string[] = [];
  for (const user of await readdir(join(dir, 'builds')).catch(() => [] as string[])) {
    for (const e of await readdir(join(dir, 'builds', user)).catch(() => [] as string[])) builds.push(`builds/${user}/${e}`);
  }
  return [...ups, ...builds];
}

async function expectNothingLeft(): Promise<void> {
  await until(async () => (await leftovers()).length === 0);
  expect(await leftovers()).toEqual([]);
  const { rows: [{ n }] } = await t.cp.db.query<{ n: number }>('SELECT count(*)::int AS n FROM images');
  expect(n).toBe(0);
  expect((await api.get('/healthz')).status).toBe(200);
}

function expect400(text: string, what: string): void {
  const r = parse(text);
  expect(r.status, `${what}: ${text.slice(0, 300)}`).toBe(400);
  expect(r.json, what).toEqual({ error: { code: expect.stringMatching(/^[a-z_]+$/), message: expect.any(String), requestId: expect.any(String) } });
}

describe('truncated multipart uploads', () => {
  it('Content-Length larger than what is sent, then the client half-closes: nothing left behind, no 5xx', async () => {
    const b = body();
    for (const cut of [100, Math.floor(b.length / 2), b.length - 10]) {
      const c = await open();
      c.socket.write(head({ contentLength: b.length + 1000 }));
      c.socket.write(b.subarray(0, cut));
      c.socket.end(); // FIN: the body will never be complete
      const text = await c.response;
      if (text) expect(parse(text).status, text.slice(0, 200)).toBeLessThan(500);
      await expectNothingLeft();
    }
  });

  it('Content-Length larger than what is sent, then the client goes away (reset): nothing left behind', async () => {
    const b = body();
    const c = await open();
    c.socket.write(head({ contentLength: b.length + 1000 }));
    c.socket.write(b.subarray(0, Math.floor(b.length / 2)));
    await until(async () => (await leftovers()).some((f) => f.startsWith('uploads/')), 2000);
    c.socket.resetAndDestroy();
    await c.closed;
    await expectNothingLeft();
  });

  it('a body cut in the middle of the file part (Content-Length matches what is sent) is 400', async () => {
    const b = body();
    for (const cut of [Math.floor(b.length / 2), b.length - 20]) {
      const c = await open();
      const part = b.subarray(0, cut);
      c.socket.write(head({ contentLength: part.length }));
      c.socket.write(part);
      const text = await Promise.race([c.response, new Promise<string>((r) => setTimeout(() => { r('(no answer)'); c.socket.destroy(); }, 10_000))]);
      expect400(text, `cut at ${cut} of ${b.length}`);
      await expectNothingLeft();
    }
  });

  it('a body cut in the middle of a text field is 400', async () => {
    const b = body();
    const part = b.subarray(0, 60);
    const c = await open();
    c.socket.write(head({ contentLength: part.length }) );
    c.socket.write(part);
    expect400(await c.response, 'cut in a field');
    await expectNothingLeft();
  });

  it('a body without its closing boundary is 400 (Content-Length and chunked)', async () => {
    const b = body();
    const noClose = b.subarray(0, b.length - `\r\n--${BOUNDARY}--\r\n`.length);
    let c = await open();
    c.socket.write(head({ contentLength: noClose.length }));
    c.socket.write(noClose);
    expect400(await c.response, 'no closing boundary');
    await expectNothingLeft();

    c = await open();
    c.socket.write(head({ chunked: true }));
    c.socket.write(`${noClose.length.toString(16)}\r\n`);
    c.socket.write(noClose);
    c.socket.write('\r\n0\r\n\r\n');
    expect400(await c.response, 'no closing boundary, chunked');
    await expectNothingLeft();
  });

  it('a complete body still uploads, also when the chunked terminator comes late', async () => {
    for (const chunked of [false, true]) {
      const b = body();
      const c = await open();
      if (chunked) {
        c.socket.write(head({ chunked: true }) + `${b.length.toString(16)}\r\n`);
        c.socket.write(Buffer.concat([b, Buffer.from('\r\n')]));
        await new Promise((r) => setTimeout(r, 300)); // the parser has seen the closing boundary by now
        c.socket.write('0\r\n\r\n');
      } else {
        c.socket.write(head({ contentLength: b.length }));
        c.socket.write(b);
      }
      const text = await c.response;
      expect(parse(text).status, text.slice(0, 300)).toBe(201);
      const id = parse(text).json.id;
      await u.waitForBuild(id);
      expect((await u.del(`/api/images/${id}`)).status).toBe(204);
    }
  });
});
