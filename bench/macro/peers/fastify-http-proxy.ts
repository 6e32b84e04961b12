/**
 * Peer: Fastify + @fastify/http-proxy (reply-from over undici), as its README configures it,
 * logger off. Round robin through replyOptions.getUpstream.
 */
import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';
import { peerConfig, router } from './common.js';

const cfg = peerConfig();
const pick = router(cfg);
const app = Fastify({ logger: false, keepAliveTimeout: 600_000 });
await app.register(proxy, {
  upstream: `http://${cfg.single}`,
  replyOptions: {
    getUpstream: (req) => `http://${pick(req.headers.host)}`,
  },
});
await app.listen({ host: '127.0.0.1', port: cfg.port });
process.stdout.write(`fastify-http-proxy listening on ${cfg.port}\n`);
