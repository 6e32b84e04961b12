import { isIP } from 'node:net';
import { UsageError } from '../../shared/cli/args.js';
import { isValidHostPattern, normalizeHost } from '../../shared/hostname.js';
import { ApiError } from '../http/errors.js';

/**
 * App domains (`BERTH_APP_DOMAINS`): the DNS names under which users may create apps, as Knative's
 * domain config or Cloud Run's `run.app`. Without them any tenant can claim any hostname first —
 * `www.yourcompany.com`, or the name another customer is about to deploy — and the proxy serves
 * it wherever DNS points at it. With them, a new app's hostname must be one label under one of
 * them (`shop.apps.example.com` under `apps.example.com`, as Cloud Run's `*.run.app`): not the
 * domain itself, and not deeper — `login.shop.apps.example.com` would sit under another tenant's
 * app and share the cookies scoped to its domain. (Put the domain on the Public Suffix List to keep
 * browsers from sharing cookies across apps.) Apps that exist already keep deploying under their
 * names (set the list before opening the platform).
 */

/** Parse the list ("apps.example.com, localhost"): lower-cased, each a valid DNS name. Empty: any hostname. */
export function parseAppDomains(text: string | undefined): string[] {
  if (text === undefined) return [];
  const out: string[] = [];
  for (const raw of text.split(',')) {
    const d = raw.trim().replace(/^\*?\./, '');
    if (d === '') continue;
    const host = normalizeHost(d);
    if (!host || host.includes('*') || host.startsWith('[') || isIP(host) !== 0 || !isValidHostPattern(host)) throw new UsageError(`--app-domains: "${raw.trim()}" is not a DNS name (give suffixes like apps.example.com)`);
    if (!out.includes(host)) out.push(host);
  }
  return out;
}

/** Is `host` one label under one of `domains`? (An empty list allows any hostname.) */
export function underAppDomain(host: string, domains: readonly string[]): boolean {
  if (domains.length === 0) return true;
  return domains.some((d) => {
    const cut = host.length - d.length - 1;
    return cut > 0 && host.endsWith(d) && host.charCodeAt(cut) === 46 /* . */ && host.lastIndexOf('.', cut - 1) === -1;
  });
}

/** 400 `app_domain` unless a new app's hostname is under an app domain. */
export function checkAppDomain(host: string, domains: readonly string[]): void {
  if (underAppDomain(host, domains)) return;
  const list = domains.map((d) => `*.${d}`).join(', ');
  throw new ApiError(400, 'app_domain', `field "app_hostname": "${host}" is not one label under this platform's app domains (${list}); choose a name like myapp.${domains[0]}`);
}
