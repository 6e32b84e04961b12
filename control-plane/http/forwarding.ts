import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../shared/logging.js';

/**
 * A warning, once per process, when a request carries X-Forwarded-For from an address that
 * BERTH_TRUST_PROXY does not name. Behind a reverse proxy nobody declared, every client has the
 * proxy's address: all of them share one allowance of failed logins and signups and one share of
 * streams (logs, events), so one tenant's guessing or following locks out the rest. (Anyone can
 * send the header to the API directly too; that costs one log line, once.)
 */
export function warnUntrustedForwarding(app: FastifyInstance, log: Logger): void {
  let warned = false;
  app.addHook('onRequest', (req, _reply, done) => {
    if (!warned && req.headers['x-forwarded-for'] !== undefined && req.ip === req.socket.remoteAddress) {
      warned = true;
      log.warn({ from: req.ip }, `requests carry X-Forwarded-For from ${req.ip}, which BERTH_TRUST_PROXY does not name, so they count as coming from ${req.ip}: behind a reverse proxy every client then shares one allowance of failed logins and one share of streams. If ${req.ip} is your reverse proxy, set BERTH_TRUST_PROXY=${req.ip}; if it is not, someone sends the header hoping to be believed (it is not)`);
    }
    done();
  });
}
