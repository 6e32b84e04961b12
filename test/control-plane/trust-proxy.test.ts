import { PassThrough } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane } from '../../control-plane/app.js';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

// Failed logins per client address: behind a reverse proxy every client has the proxy's address
// unless the proxy is trusted to say who the client is (BERTH_TRUST_PROXY), and only then.
describe('BERTH_TRUST_PROXY: whose X-Forwarded-For the login limits believe', () => {
  let behind: TestControlPlane;
  let direct: TestControlPlane;
  const limits = { perIpMax: 3, perAccountMax: 100 };
  beforeAll(async () => {
    [behind, direct] = await Promise.all([
      startTestControlPlane({ seedDefaultUser: false, trustProxy: ['127.0.0.0/8'], loginRateLimit: limits }),
      startTestControlPlane({ seedDefaultUser: false, loginRateLimit: limits }),
    ]);
  });
  afterAll(async () => { await Promise.all([behind?.close(), direct?.close()]); });

  const login = (t: TestControlPlane, xff: string, n: number) =>
    new Api(t.cp.url).req('POST', '/api/auth/login', { json: { email: `nobody${n}@example.com`, password: 'wrong-password-1' }, headers: { 'x-forwarded-for': xff }, token: null });

  it('trusted: one client guessing is limited, another client behind the same proxy is not', async () => {
    for (let i = 0; i < 3; i++) expect((await login(behind, '203.0.113.7', i)).status).toBe(401);
    expect((await login(behind, '203.0.113.7', 9)).status).toBe(429);
    expect((await login(behind, '198.51.100.2', 10)).status).toBe(401);
  });

  it('not trusted: a client cannot pick a fresh address per guess with X-Forwarded-For', async () => {
    for (let i = 0; i < 3; i++) expect((await login(direct, `203.0.113.${i}`, i)).status).toBe(401);
    expect((await login(direct, '198.51.100.99', 9)).status).toBe(429);
  });

  it('takes addresses and CIDRs only, never "everyone"', async () => {
    for (const bad of [['true'], ['*'], ['0.0.0.0/0'], ['::/0'], ['10.0.0.0/33'], ['fd00::/129'], ['10.0.0.1/8/1'], ['example.com'], ['fe80::1%eth0'], ['fe80::1%a:b']]) {
      await expect(startControlPlane({ port: 0, quiet: true, trustProxy: bad }), bad[0]).rejects.toThrow(/is not an IP address or CIDR/);
    }
  });
});

describe('X-Forwarded-For from an address BERTH_TRUST_PROXY does not name', () => {
  it('is one warning that names the address and the setting', async () => {
    const lines: Array<{ level: number; msg: string; from?: string }> = [];
    const stream = new PassThrough();
    stream.on('data', (c: Buffer) => { for (const l of c.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l)); });
    const t = await startTestControlPlane({ seedDefaultUser: false, logger: pino({ level: 'warn' }, stream) });
    try {
      const api = new Api(t.cp.url);
      expect((await api.req('GET', '/api/info', { token: null })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 50));
      expect(lines.filter((l) => /X-Forwarded-For/.test(l.msg))).toHaveLength(0);
      for (let i = 0; i < 3; i++) await api.req('GET', '/api/info', { headers: { 'x-forwarded-for': `203.0.113.${i}` }, token: null });
      await new Promise((r) => setTimeout(r, 50));
      const warned = lines.filter((l) => /X-Forwarded-For/.test(l.msg));
      expect(warned).toHaveLength(1);
      expect(warned[0].msg).toMatch(/BERTH_TRUST_PROXY=127\.0\.0\.1/);
      // an empty header says nothing
      await api.req('GET', '/api/info', { headers: { 'x-forwarded-for': '' }, token: null });
    } finally {
      await t.close();
    }
  });

  it('is not given for a trusted proxy', async () => {
    const lines: string[] = [];
    const stream = new PassThrough();
    stream.on('data', (c: Buffer) => lines.push(c.toString('utf8')));
    const t = await startTestControlPlane({ seedDefaultUser: false, trustProxy: ['127.0.0.0/8'], logger: pino({ level: 'warn' }, stream) });
    try {
      await new Api(t.cp.url).req('GET', '/api/info', { headers: { 'x-forwarded-for': '203.0.113.9' }, token: null });
      // a client on the proxy's own host, as the proxy says: still trusted
      await new Api(t.cp.url).req('GET', '/api/info', { headers: { 'x-forwarded-for': '127.0.0.1' }, token: null });
      await new Promise((r) => setTimeout(r, 50));
      expect(lines.join('')).not.toMatch(/X-Forwarded-For/);
    } finally {
      await t.close();
    }
  });
});
