import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * One client address may hold at most `connectionsPerAddress` open connections to the API
 * (control-plane/http/connection-cap.ts): past it a connection is closed before a byte is read,
 * other addresses are not affected, a closed connection frees its place, and 127.0.0.1 (a reverse
 * proxy on the same host) and BERTH_TRUST_PROXY's peers are not counted. Clients are told apart
 * by their loopback source address (127.0.0.0/8 is all loopback on Linux).
 */
let t: TestControlPlane;
let port: number;
const sockets: Socket[] = [];

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock', connectionsPerAddress: 4, trustProxy: ['127.0.9.0/24'] });
  port = Number(new URL(t.cp.url).port);
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await t?.close();
});

/** A connection from `from`, and whether the server answers a request on it (or closed it unread). */
async function ask(from: string): Promise<{ socket: Socket; answered: boolean }> {
  const socket = connect({ port, host: '127.0.0.1', localAddress: from });
  sockets.push(socket);
  socket.setEncoding('latin1');
  let text = '';
  const answered = await new Promise<boolean>((resolve) => {
    socket.on('data', (c: string) => { text += c; if (text.includes('\r\n\r\n')) resolve(text.startsWith('HTTP/1.1 200 ')); });
    socket.on('close', () => resolve(false));
    socket.on('error', () => {});
    socket.on('connect', () => socket.write('GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n'));
  });
  return { socket, answered };
}

describe('open connections per client address', () => {
  it('past the cap a connection is closed unread; another address, a closed connection, 127.0.0.1 and a trusted proxy are not held back', async () => {
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await ask('127.0.7.1'));
    expect(held.map((h) => h.answered)).toEqual([true, true, true, true]);
    expect((await ask('127.0.7.1')).answered).toBe(false);
    // another client
    expect((await ask('127.0.7.2')).answered).toBe(true);
    // one of the four closes: its place is free again
    held[0].socket.destroy();
    let again = await ask('127.0.7.1');
    for (let i = 0; i < 20 && !again.answered; i++) {
      await new Promise((r) => setTimeout(r, 50));
      again = await ask('127.0.7.1');
    }
    expect(again.answered).toBe(true);
    // not counted: 127.0.0.1 and the peers BERTH_TRUST_PROXY names
    for (const from of ['127.0.0.1', '127.0.9.5']) {
      const many = [];
      for (let i = 0; i < 8; i++) many.push(await ask(from));
      expect(many.every((m) => m.answered), from).toBe(true);
    }
  });
});
