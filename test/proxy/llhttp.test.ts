/**
 * Pins the Node-internal llhttp binding behaviour berth's upstream client relies on
 * (proxy/upstream/llhttp.ts). Node-version specific: if this fails after a Node upgrade, the
 * upstream client must be revisited before anything else.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResponseParser, type ParserError, type ParserOwner } from '../../proxy/upstream/llhttp.js';

let server: Server;
let port = 0;
let reply = '';
beforeAll(async () => {
  server = createServer((c) => {
    c.on('data', () => {
      c.write(reply);
      if (reply.includes('X-End: yes')) c.end();
    });
    c.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as { port: number }).port;
});
afterAll(() => { server.close(); });

interface Parsed { heads: Array<[number, string, string[], boolean]>; body: string; ends: number; errors: ParserError[] }

async function parse(response: string, headRequest = false): Promise<Parsed> {
  reply = response;
  const out: Parsed = { heads: [], body: '', ends: 0, errors: [] };
  const s: Socket = connect(port, '127.0.0.1');
  await once(s, 'connect');
  const owner: ParserOwner = {
    parsedHead(status, text, headers, keepAlive) { out.heads.push([status, text, headers, keepAlive]); return headRequest; },
    parsedBody(chunk) { out.body += chunk.toString('latin1'); },
    parsedEnd() { out.ends++; },
    parsedError(err) { out.errors.push(err); },
  };
  const p = new ResponseParser(owner, s);
  s.on('end', () => { const e = p.finish(); if (e) out.errors.push(e); });
  s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await new Promise((r) => setTimeout(r, 150));
  p.close();
  s.destroy();
  return out;
}

describe('llhttp through consume()', () => {
  it('parses a response with Content-Length', async () => {
    const r = await parse('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello');
    expect(r.heads).toEqual([[200, 'OK', ['Content-Length', '5', 'X-A', 'b'], true]]);
    expect(r.body).toBe('hello');
    expect(r.ends).toBe(1);
  });

  it('accepts header lines ending in a bare LF (busybox httpd CGI, curl and nginx accept them)', async () => {
    const r = await parse('HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 2\n\nok');
    expect(r.errors).toEqual([]);
    expect(r.heads[0][0]).toBe(200);
    expect(r.body).toBe('ok');
  });

  it('chunked bodies, and more than 32 header fields (flushed early by llhttp)', async () => {
    const many = Array.from({ length: 40 }, (_, i) => `X-H${i}: v${i}\r\n`).join('');
    const r = await parse(`HTTP/1.1 200 OK\r\n${many}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\n!!!\r\n0\r\n\r\n`);
    expect(r.heads[0][2].length).toBe(82);
    expect(r.heads[0][2][80]).toBe('Transfer-Encoding');
    expect(r.body).toBe('hello!!!');
    expect(r.ends).toBe(1);
  });

  it('a body delimited by the end of the connection completes on finish()', async () => {
    const r = await parse('HTTP/1.1 200 OK\r\nX-End: yes\r\n\r\nuntil the end');
    expect(r.body).toBe('until the end');
    expect(r.ends).toBe(1);
    expect(r.heads[0][3]).toBe(false);
  });

  it('HEAD: returning true from the head callback means no body', async () => {
    const r = await parse('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n', true);
    expect(r.ends).toBe(1);
    expect(r.body).toBe('');
  });

  it('malformed responses are errors with an HPE_ code', async () => {
    const r = await parse('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!');
    expect(r.errors.length).toBe(1);
    expect(r.errors[0].code).toMatch(/^HPE_/);
    const junk = await parse('NOT HTTP AT ALL\r\n\r\n');
    expect(junk.errors[0].code).toMatch(/^HPE_/);
  });

  it('informational responses are separate messages', async () => {
    const r = await parse('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n');
    expect(r.heads.map((h) => h[0])).toEqual([103, 204]);
    expect(r.ends).toBe(2);
  });
});
