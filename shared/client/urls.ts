/** `http://HOST:PORT/`: HOST on the proxy's scheme and port (its public URL; unknown: `http://HOST/`). */
export function hostUrl(host: string, proxyUrl: string | null): string {
  if (!proxyUrl) return `http://${host}/`;
  const u = new URL(proxyUrl);
  return `${u.protocol}//${host}${u.port ? `:${u.port}` : ''}/`;
}

/** `http://HOST:PORT/` (and `PROXY/apps/HOST/`, which needs no DNS) from the proxy's public URL. */
export function appUrls(host: string, proxyUrl: string | null): string[] {
  if (!proxyUrl) return [hostUrl(host, null), `/apps/${host}/ on any berth proxy`];
  return [hostUrl(host, proxyUrl), `${new URL(proxyUrl).origin}/apps/${host}/`];
}
