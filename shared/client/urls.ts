/** `http://HOST:PORT/` (and `PROXY/apps/HOST/`, which needs no DNS) from the proxy's public URL. */
export function appUrls(host: string, proxyUrl: string | null): string[] {
  if (!proxyUrl) return [`http://${host}/`, `/apps/${host}/ on any berth proxy`];
  const u = new URL(proxyUrl);
  const port = u.port ? `:${u.port}` : '';
  return [`${u.protocol}//${host}${port}/`, `${u.origin}/apps/${host}/`];
}
