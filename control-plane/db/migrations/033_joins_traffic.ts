/**
 * `images.joins_traffic`: how a revision joined its app's traffic when it was deployed (apps/repo.ts
 * joinTraffic): `all` (it takes all of it once it can serve: the split was `latest` alone), `latest`
 * (the split was set by hand and deploys keep it, as Cloud Run does: it takes the `latest` entries'
 * share), `none` (deployed with `no_traffic`, or into a split by hand with no `latest` share). The
 * CLI reads it to know what to wait for and to say why a revision serves nothing. Null for
 * revisions deployed before it. Not read by the route table: no trigger change.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS joins_traffic TEXT
  CHECK (joins_traffic IS NULL OR joins_traffic IN ('all', 'latest', 'none'));
`;
