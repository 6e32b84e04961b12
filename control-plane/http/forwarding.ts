import { BlockList, isIPv4, isIPv6 } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../shared/logging.js';

/** Peers warned about at most (each once). */
const MAX_WARNED = 16;

/**
 * A warning, once per peer address, when a request carries X-Forwarded-For from an address that
 * BERTH_TRUST_PROXY (`trusted`: addresses and CIDRs) does not name. Behind a reverse proxy nobody
 * declared, every client has the proxy's address: all of them share one allowance of failed
 * logins and signups and one share of streams (logs, events), so one tenant's guessing or
 * following locks out the rest. (Anyone can send the header to the API directly too: that costs
 * a log line per address, for at most MAX_WARNED addresses.)
 */
export function warnUntrustedForwarding(app: FastifyInstance, log: Logger, trusted: readonly string[]): void {
  const list = new BlockList();
  for (const t of trusted) {
    const [ip, bits] = t.split('/');
    const type = isIPv6(ip) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(ip, type);
    else list.addSubnet(ip, Number(bits), type);
  }
  const isTrusted = (addr: string) => {
    const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr)?.[1];
    if (v4 !== undefined) return list.check(v4, 'ipv4') || list.check(addr, 'ipv6');
    return isIPv4(addr) ? list.check(addr, 'ipv4') : isIPv6(addr) && list.check(addr, 'ipv6');
  };
  const warned = new Set<string>();
  app.addHook('onRequest', (req, _reply, done) => {
    const peer = req.socket.remoteAddress;
    if (req.headers['x-forwarded-for'] && peer !== undefined && warned.size < MAX_WARNED && !warned.has(peer) && !isTrusted(peer)) {
      warned.add(peer);
      log.warn({ from: peer }, `requests carry X-Forwarded-For from ${peer}, which BERTH_TRUST_PROXY does not name, so they count as coming from ${peer}: behind a reverse proxy every client then shares one allowance of failed logins and one share of streams, and once anyone signs in from it, every client counts as a known one for that account. If ${peer} is your reverse proxy, set BERTH_TRUST_PROXY=${peer}; if it is not, someone sends the header hoping to be believed (it is not)`);
    }
    done();
  });
}
