/**
 * Private apps (Cloud Run's `--no-allow-unauthenticated`): `apps.private`, and the invoker tokens
 * that may call one, stored as their SHA-256 (the token itself is shown once, at creation). The
 * proxies get the digests in the app's routes (`auth`).
 */
export const sql = `
ALTER TABLE apps ADD COLUMN IF NOT EXISTS private BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS app_invokers (
  id BIGSERIAL PRIMARY KEY,
  app_hostname TEXT NOT NULL REFERENCES apps(app_hostname) ON DELETE CASCADE,
  name TEXT NOT NULL,
  token_sha256 TEXT NOT NULL UNIQUE,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS app_invokers_app ON app_invokers (app_hostname);
`;
