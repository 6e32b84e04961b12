/**
 * Where the Docker daemon may pull the images a Dockerfile names. The daemon pulls from the
 * host's network with the host's privileges: `FROM 127.0.0.1:9901/a/b` would have it send
 * `GET /v2/a/b/manifests/…` to the proxy's admin listener, the API, or another tenant's published
 * port (past its private-app token check), and quote the answer in the build log; a registry the
 * tenant runs could redirect it anywhere. A DNS name can point at 127.0.0.1 as well as an IP
 * literal can, so this is an allow-list of registry hosts (`BERTH_REGISTRIES`), not a deny-list.
 */

import { UsageError } from '../../shared/cli/args.js';

/** Public registries no tenant controls (`*.pkg.dev`: Google Artifact Registry's regional hosts). */
export const DEFAULT_REGISTRIES: readonly string[] = Object.freeze([
  'docker.io', 'ghcr.io', 'quay.io', 'gcr.io', 'mirror.gcr.io', 'registry.k8s.io', 'mcr.microsoft.com', 'public.ecr.aws', 'registry.gitlab.com', '*.pkg.dev',
]);

/**
 * The registry an image reference is pulled from, as Docker reads it: a first path component with
 * `.` or `:`, `localhost`, or upper case is a registry host (with its port); otherwise Docker Hub.
 */
export function registryOf(ref: string): string {
  const r = ref.trim();
  const slash = r.indexOf('/');
  if (slash < 0) return 'docker.io';
  const first = r.slice(0, slash);
  if (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first) return 'docker.io';
  const host = first.toLowerCase();
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
}

/** Is `registry` (registryOf) one of `allowed` (exact, or `*.suffix` for any host under it, no port)? */
export function registryAllowed(registry: string, allowed: readonly string[]): boolean {
  for (const a of allowed) {
    if (a === registry) return true;
    if (a.startsWith('*.') && registry.endsWith(a.slice(1)) && !registry.includes(':')) return true;
  }
  return false;
}

/** `BERTH_REGISTRIES` / `--registries`: comma-separated hosts (`host[:port]`, `*.suffix`); unset: the defaults. A bad one is a usage error naming it. */
export function parseRegistries(v: string | undefined): string[] {
  if (v === undefined || v.trim() === '') return [...DEFAULT_REGISTRIES];
  const out: string[] = [];
  for (const raw of v.split(',')) {
    const r = raw.trim().toLowerCase();
    if (r === '') continue;
    const port = /:(\d+)$/.exec(r);
    if (!/^(?:\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?$/.test(r) || (r.startsWith('*.') && r.includes(':')) || (port && (Number(port[1]) < 1 || Number(port[1]) > 65535))) {
      throw new UsageError(`BERTH_REGISTRIES: "${raw.trim()}" is not a registry host (host, host:port or *.domain)`);
    }
    out.push(r === 'index.docker.io' || r === 'registry-1.docker.io' ? 'docker.io' : r);
  }
  if (out.length > 100) throw new UsageError('BERTH_REGISTRIES: at most 100 registries');
  // (`,` alone would refuse every image: unset it for the defaults)
  if (out.length === 0) throw new UsageError('BERTH_REGISTRIES names no registry; unset it for the defaults');
  return out;
}
