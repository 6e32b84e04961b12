/**
 * Revisions and traffic splitting (Cloud Run's model): an app is every image one user uploaded
 * under one hostname, each image a numbered revision of it. `apps` owns the hostname (one user),
 * counts revisions and holds the traffic split: a JSON list of `{image_id | latest, percent, tag?}`
 * entries (validated by control-plane/apps/traffic.ts before it is written). `routable_at` is
 * when a revision could first take traffic (built and, unless it scales from zero, an instance
 * healthy): `latest` means the newest such revision, so a new one takes over only once it serves,
 * and a later crash does not hand traffic back.
 * Every app that exists keeps serving as revision 1 with all its traffic on `latest`.
 */
export const sql = `
CREATE TABLE apps (
  app_hostname  TEXT PRIMARY KEY,
  user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  last_revision INTEGER NOT NULL DEFAULT 0,
  traffic       JSONB NOT NULL DEFAULT '[{"latest": true, "percent": 100}]'::jsonb,
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX apps_user_idx ON apps (user_id);
INSERT INTO apps (app_hostname, user_id, last_revision, created_at)
  SELECT app_hostname, user_id, 1, created_at FROM images;

ALTER TABLE images ADD COLUMN revision INTEGER, ADD COLUMN routable_at TIMESTAMPTZ;
UPDATE images SET revision = 1, routable_at = CASE WHEN status = 'ready' THEN now() END;
ALTER TABLE images ALTER COLUMN revision SET NOT NULL;
DROP INDEX images_app_hostname_key;
CREATE UNIQUE INDEX images_app_revision_key ON images (app_hostname, revision);
ALTER TABLE images ADD CONSTRAINT images_app_fkey FOREIGN KEY (app_hostname) REFERENCES apps (app_hostname);
`;
