/**
 * App domains (control-plane/apps/domains.ts, BERTH_APP_DOMAINS): with a list set, a new app's
 * hostname must be a subdomain of one of them (no tenant claims `www.yourcompany.com` first);
 * apps that exist keep deploying; GET /api/info says which domains; a bad list is a usage error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAppDomain, parseAppDomains, underAppDomain } from '../../control-plane/apps/domains.js';
import { tenantOptions } from '../../control-plane/cli.js';
import { resolveConfig } from '../../control-plane/config.js';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

describe('app domains', () => {
  it('parses a comma list into lower-case DNS names, refusing what is not one', () => {
    expect(parseAppDomains(undefined)).toEqual([]);
    expect(parseAppDomains(' Apps.Example.com , localhost,*.b.test, .c.test,,apps.example.com')).toEqual(['apps.example.com', 'localhost', 'b.test', 'c.test']);
    for (const bad of ['a b.test', '*', '1.2.3.4', '[::1]', 'x..y', 'a.*.test', `${'a'.repeat(64)}.test`]) {
      expect(() => parseAppDomains(bad), bad).toThrow(/--app-domains: .* is not a DNS name/);
    }
    expect(tenantOptions({ 'app-domains': 'apps.test' }).appDomains).toEqual(['apps.test']);
    expect(() => tenantOptions({ 'app-domains': 'not a domain' })).toThrow(/--app-domains/);
    // given in code: the same rules
    expect(resolveConfig({ appDomains: ['Apps.Test.', '*.b.test'] }).appDomains).toEqual(['apps.test', 'b.test']);
    expect(() => resolveConfig({ appDomains: ['a b'] })).toThrow(/not a DNS name/);
  });

  it('allows subdomains only, on a label boundary', () => {
    const d = ['apps.example.com', 'localhost'];
    for (const ok of ['shop.apps.example.com', 'hello.localhost', 'canary---shop.apps.example.com']) expect(underAppDomain(ok, d), ok).toBe(true);
    // not the domain, not another domain that ends alike, and not under another app's name
    for (const no of ['apps.example.com', 'evilapps.example.com', 'example.com', 'www.example.com', 'localhost', 'xlocalhost',
      'apps.example.com.evil.test', 'login.shop.apps.example.com', 'a.b.localhost', '.apps.example.com']) expect(underAppDomain(no, d), no).toBe(false);
    expect(underAppDomain('anything.test', [])).toBe(true);
    expect(() => checkAppDomain('www.example.com', d)).toThrow(/"www\.example\.com" is not one label under this platform's app domains \(\*\.apps\.example\.com, \*\.localhost\); choose a name like myapp\.apps\.example\.com/);
  });
});

describe('uploads under app domains', () => {
  let t: TestControlPlane;
  let alice: Api;
  let archive: Buffer;

  beforeAll(async () => {
    // no Docker: builds fail, which does not matter here (the upload's answer does)
    t = await startTestControlPlane({ seedDefaultUser: false, appDomains: ['apps.test'], dockerHost: 'unix:///nonexistent/docker.sock' });
    alice = await new Api(t.cp.url).signup('domains@example.com');
    archive = await makeTar([{ name: 'Dockerfile', content: 'FROM scratch\n' }]);
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  it('refuses a new app outside them with 400 app_domain, accepts one under them', async () => {
    for (const host of ['www.bank.example', 'apps.test', 'xapps.test', 'deep.shop.apps.test']) {
      const r = await alice.upload({ name: 'x', app_hostname: host }, archive);
      expect(r.status, host).toBe(400);
      expect(r.body.error.code).toBe('app_domain');
      expect(r.body.error.message).toContain('*.apps.test');
    }
    const ok = await alice.upload({ name: 'shop', app_hostname: 'Shop.Apps.Test' }, archive);
    expect(ok.status, ok.text).toBe(201);
    expect(ok.body.app_hostname).toBe('shop.apps.test');
    expect((await t.cp.db.query(`SELECT 1 FROM apps WHERE app_hostname IN ('www.bank.example', 'apps.test', 'xapps.test')`)).rowCount).toBe(0);
  });

  it('an app that existed before the list keeps deploying under its name', async () => {
    const me = Number((await alice.get('/api/auth/me')).body.user.id);
    await insertReadyImage(t.cp, me, 'legacy.example.org');
    const r = await alice.upload({ name: 'legacy', app_hostname: 'legacy.example.org' }, archive);
    expect(r.status, r.text).toBe(201);
    expect(r.body.revision).toBe(2);
  });

  it('GET /api/info names the domains', async () => {
    const r = await new Api(t.cp.url).req('GET', '/api/info', { token: null });
    expect(r.body.app_domains).toEqual(['apps.test']);
  });
});
