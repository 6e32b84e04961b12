import type { FastifyInstance } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../../shared/logging.js';

/**
 * A warning, once per peer address, when a request carries X-Forwarded-For from a peer that
 * BERTH_TRUST_PROXY does not name. Behind a reverse proxy nobody declared, every client has the
 * proxy's address: all of them share one allowance of failed logins and signups and one share of
 * streams (logs, events), so one tenant's guessing or following locks out the rest.
 *
 * Whether the peer is trusted is Fastify's own answer (it compiled BERTH_TRUST_PROXY): `req.ips`
 * lists the forwarded addresses only for a trusted peer. Anyone can send the header to the API
 * directly too, so warnings are at most one a second, and the last 1,000 peers are remembered: a
 * flood of made-up peers cannot fill a table and silence the warning for good.
 */
export function warnUntrustedForwarding(app: FastifyInstance, log: Logger): void {
  const warned = new LRUCache<string, true>({ max: 1000 });
  let lastAt = 0;
  app.addHook('onRequest', (req, _reply, done) => {
    const peer = req.socket.remoteAddress;
    if (req.headers['x-forwarded-for'] && peer !== undefined && (req.ips?.length ?? 1) <= 1 && !warned.has(peer)) {
      const now = Date.now();
      if (now - lastAt >= 1000) {
        lastAt = now;
        warned.set(peer, true);
        log.warn({ from: peer }, `requests carry X-Forwarded-For from ${peer}, which BERTH_TRUST_PROXY does not name, so they count as coming from ${peer}: behind a reverse proxy every client then shares one allowance of failed logins and one share of streams, and once anyone signs in from it, every client counts as a known one for that account. If ${peer} is your reverse proxy, set BERTH_TRUST_PROXY=${peer}; if it is not, someone sends the header hoping to be believed (it is not)`);
      }
    }
    done();
  });
}
