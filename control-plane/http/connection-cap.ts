import { BlockList, isIPv4, type Socket } from 'node:net';
import type { Server } from 'node:http';
import type { Logger } from '../../shared/logging.js';
import { addressKey, NETWORK_FACTOR, networkKey } from '../auth/rate-limit.js';
import { UserCaps } from './user-caps.js';

/**
 * At most `max` open connections to the API from one client address (IPv6 by its /64, and its /48
 * NETWORK_FACTOR times that, as the login limits count): one client opening thousands of idle or
 * slow connections would otherwise take the process's file descriptors, and the database's and
 * Docker's sockets with them. A connection past it is closed at once, before a byte is read.
 *
 * Not counted: the peers BERTH_TRUST_PROXY names (a reverse proxy carries everyone's
 * connections), and 127.0.0.1 / ::1, where a reverse proxy on the same host connects from (other
 * loopback addresses count: nothing but a local process uses them).
 */
export function capConnectionsPerAddress(server: Server, max: number, trustProxy: readonly string[], log: Logger): void {
  const trusted = new BlockList();
  for (const entry of trustProxy) {
    const [ip, bits] = entry.split('/');
    const type = isIPv4(ip) ? 'ipv4' : 'ipv6';
    if (bits === undefined) trusted.addAddress(ip, type);
    else trusted.addSubnet(ip, Number(bits), type);
  }
  // (an IPv6 site's /48 as a whole gets a few times one address's: it holds 65,536 /64s)
  const byAddress = new UserCaps<string>(max, Number.MAX_SAFE_INTEGER);
  const byNetwork = new UserCaps<string>(NETWORK_FACTOR * max, Number.MAX_SAFE_INTEGER);
  const full = () => new Error('full');
  let warnedAt = 0;
  server.on('connection', (socket: Socket) => {
    const peer = socket.remoteAddress;
    if (peer === undefined || peer === '127.0.0.1' || peer === '::1' || peer === '::ffff:127.0.0.1') return;
    const mapped = peer.startsWith('::ffff:') && isIPv4(peer.slice(7)) ? peer.slice(7) : peer;
    if (trusted.check(mapped, isIPv4(mapped) ? 'ipv4' : 'ipv6')) return;
    const net = networkKey(peer);
    const releases: (() => void)[] = [];
    try {
      releases.push(byAddress.take(addressKey(peer), full));
      if (net !== null) releases.push(byNetwork.take(net, full));
    } catch {
      for (const release of releases) release();
      socket.destroy();
      const now = Date.now();
      if (now - warnedAt >= 10_000) {
        warnedAt = now;
        log.warn({ from: net ?? addressKey(peer), max }, `a client holds ${max} connections to the API, the most one address may (BERTH_API_CONNECTIONS_PER_ADDRESS; an IPv6 /48 ${NETWORK_FACTOR} times that); more are closed`);
      }
      return;
    }
    socket.once('close', () => { for (const release of releases) release(); });
  });
}
