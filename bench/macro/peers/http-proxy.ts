/**
 * Peer: node-http-proxy on node:http, with a keep-alive agent (without one it opens a new
 * upstream connection per request, which would be an unfair comparison) and xfwd headers.
 */
import http from 'node:http';
import httpProxy from 'http-proxy';
import { peerConfig, router } from './common.js';

const cfg = peerConfig();
const pick = router(cfg);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ agent, xfwd: true });
proxy.on('error', (_err, _req, res) => {
  if (res instanceof http.ServerResponse && !res.headersSent) {
    res.writeHead(502);
    res.end('bad gateway');
  } else {
    res.destroy();
  }
});
const server = http.createServer((req, res) => {
  proxy.web(req, res, { target: `http://${pick(req.headers.host)}` });
});
server.keepAliveTimeout = 600_000;
server.listen(cfg.port, '127.0.0.1', () => process.stdout.write(`http-proxy listening on ${cfg.port}\n`));
