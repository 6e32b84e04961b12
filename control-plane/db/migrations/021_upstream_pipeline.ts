/**
 * Per revision, HTTP/1.1 pipelining from the proxies to its instances (RouteSpec.pipeline): up to
 * this many GET requests share a connection; 1 never pipelines.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS upstream_pipeline INTEGER NOT NULL DEFAULT 1
  CHECK (upstream_pipeline BETWEEN 1 AND 16);
`;
