/**
 * Several proxy tokens at once (BERTH_PROXY_TOKEN="new,old"), so a token can be rotated without a
 * moment where a proxy is refused: every listed token is accepted on the proxy endpoints, the
 * first is current, and the control plane shows which proxies still present a retiring one.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BearerTokens, loadToken } from '../../control-plane/http/tokens.js';
import { tokenList } from '../../shared/token-list.js';
import { Api } from '../helpers/api.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

const NEW = 'bpt_new-token-0123456789';
const OLD = 'bpt_old-token-9876543210';
let t: TestControlPlane;
const dir = mkdtempSync(join(tmpdir(), 'berth-proxy-tokens-'));

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, proxyToken: ` ${NEW}, ${OLD}\n`, dockerHost: 'unix:///nonexistent/docker.sock' });
});
afterAll(async () => {
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

const report = (proxyId: string) => ({ proxyId, tableVersion: null, routes: [], endpoints: [] });

describe('proxy token rotation', () => {
  it('parses lists split by commas and whitespace; matches each token in constant time, and nothing else', () => {
    expect(tokenList(' a, b\nc\t,,d ')).toEqual(['a', 'b', 'c', 'd']);
    expect(tokenList(' ,\n')).toEqual([]);
    const set = new BearerTokens(['a1', 'b2']);
    expect(set.current).toBe('a1');
    expect(set.match('Bearer a1')).toBe(0);
    expect(set.match('bearer   b2 ')).toBe(1);
    expect(set.match('Bearer a1,b2')).toBe(-1);
    expect(set.match('Bearer a')).toBe(-1);
    expect(set.match('Basic a1')).toBe(-1);
    expect(set.match(undefined)).toBe(-1);
    expect(() => new BearerTokens([])).toThrow();
  });

  it('accepts every listed token on the proxy endpoints and refuses the list itself, a prefix, or none', async () => {
    for (const tok of [NEW, OLD]) {
      expect((await new Api(t.cp.url, tok).post('/v1/proxy/report', report(`px-${tok.slice(4, 7)}`))).status).toBe(204);
      // metering: authenticated (the empty body is then refused by the schema, not the token)
      expect((await new Api(t.cp.url, tok).post('/v1/proxy/metering', {})).status).toBe(400);
      const watch = await request(`${t.cp.url}/v1/routes/watch`, { headers: { authorization: `Bearer ${tok}` } });
      expect(watch.statusCode).toBe(200);
      expect(watch.headers['content-type']).toMatch(/text\/event-stream/);
      watch.body.destroy();
    }
    for (const bad of [`${NEW},${OLD}`, NEW.slice(0, -1), 'x', '']) {
      expect((await new Api(t.cp.url, bad || undefined).post('/v1/proxy/report', report('px-bad'))).status).toBe(401);
      expect((await new Api(t.cp.url, bad || undefined).post('/v1/proxy/metering', {})).status).toBe(401);
    }
  });

  it('shows, to the proxy token only, which proxies still report with a retiring token', async () => {
    await new Api(t.cp.url, NEW).post('/v1/proxy/report', report('px-current'));
    await new Api(t.cp.url, OLD).post('/v1/proxy/report', report('px-retiring'));
    const { status, body } = await new Api(t.cp.url, NEW).get('/v1/proxies');
    expect(status).toBe(200);
    const byId = new Map<string, any>(body.proxies.map((p: any) => [p.proxy_id, p]));
    expect(byId.get('px-current').token).toBe('current');
    expect(byId.get('px-retiring').token).toBe('retiring #2');
    const user = await new Api(t.cp.url).signup('tok-user@example.com');
    const seen = (await user.get('/v1/proxies')).body;
    expect(seen.proxies.length).toBeGreaterThan(0);
    for (const p of seen.proxies) expect(p.token).toBeUndefined();
  });

  it('reads several tokens from the data-directory file, and generates one (0600) when there is none', async () => {
    writeFileSync(join(dir, 'proxy-token'), `${NEW}\n${OLD}\n`, { mode: 0o600 });
    expect(await loadToken(undefined, dir, 'proxy-token', 'bpt_')).toEqual({ token: NEW, tokens: [NEW, OLD], file: join(dir, 'proxy-token') });
    // a configured value wins over the file; a value of only separators counts as unset
    expect((await loadToken('a,b', dir, 'proxy-token', 'bpt_')).tokens).toEqual(['a', 'b']);
    expect((await loadToken(' , ', dir, 'proxy-token', 'bpt_')).tokens).toEqual([NEW, OLD]);
    const fresh = await loadToken(undefined, dir, 'metrics-token', 'bmt_');
    expect(fresh.token).toMatch(/^bmt_[A-Za-z0-9_-]{32}$/);
    expect(statSync(join(dir, 'metrics-token')).mode & 0o777).toBe(0o600);
  });
});
