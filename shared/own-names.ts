import { UsageError } from './cli/args.js';
import { isValidHostPattern, normalizeHost } from './hostname.js';

/**
 * The proxy's own names (`--apps-path-hosts`, BERTH_APPS_PATH_HOSTS): where `/apps/{host}/`
 * reaches an app, and names no app may take (the control plane reserves them). Here, not in
 * proxy/, so the control plane reads them without loading the proxy. As normalised names; a
 * wildcard, a bad name or more than 100 is a usage error.
 */
export function ownNamesOption(v: string | undefined): string[] {
  if (v === undefined || v.trim() === '') return [];
  const names = v.split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (names.length > 100) throw new UsageError(`--apps-path-hosts takes at most 100 names (got ${names.length})`);
  return names.map((raw) => {
    const n = normalizeHost(raw);
    if (!/^[a-z0-9._-]+$/i.test(raw) || !isValidHostPattern(n)) throw new UsageError(`--apps-path-hosts: "${raw}" is not a hostname (no wildcards, ports or paths)`);
    return n;
  });
}
