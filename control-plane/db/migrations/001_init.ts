/** Users, API tokens, images, containers (filled by the container module), events (outbox). */
export const sql = `
CREATE TABLE users (
  id            BIGSERIAL PRIMARY KEY,
  email         TEXT NOT NULL,
  username      TEXT,
  password_hash TEXT NOT NULL,
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (lower(username)) WHERE username IS NOT NULL;

CREATE TABLE api_tokens (
  id           BIGSERIAL PRIMARY KEY,
  user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  name         TEXT NOT NULL,
  token_hash   TEXT NOT NULL UNIQUE,
  prefix       TEXT NOT NULL,
  created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_used_at TIMESTAMPTZ,
  expires_at   TIMESTAMPTZ,
  revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

CREATE TABLE images (
  id                   BIGSERIAL PRIMARY KEY,
  user_id              BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  name                 TEXT NOT NULL,
  tag                  TEXT NOT NULL,
  app_hostname         TEXT NOT NULL,
  container_port       INTEGER NOT NULL DEFAULT 8080 CHECK (container_port BETWEEN 1 AND 65535),
  min_instances        INTEGER NOT NULL DEFAULT 0 CHECK (min_instances >= 0),
  max_instances        INTEGER NOT NULL DEFAULT 1 CHECK (max_instances >= 1 AND max_instances >= min_instances),
  cpu_limit            NUMERIC,
  memory_limit         TEXT,
  memory_limit_bytes   BIGINT,
  status               TEXT NOT NULL CHECK (status IN ('building', 'ready', 'build_failed')),
  status_reason        TEXT,
  docker_image         TEXT NOT NULL,
  docker_image_id      TEXT,
  build_logs           TEXT NOT NULL DEFAULT '',
  build_logs_truncated BOOLEAN NOT NULL DEFAULT false,
  build_started_at     TIMESTAMPTZ,
  build_finished_at    TIMESTAMPTZ,
  created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX images_app_hostname_key ON images (app_hostname);
CREATE INDEX images_user_idx ON images (user_id);
CREATE INDEX images_status_idx ON images (status);

CREATE TABLE containers (
  id            BIGSERIAL PRIMARY KEY,
  user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  image_id      BIGINT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
  docker_id     TEXT,
  name          TEXT,
  status        TEXT NOT NULL DEFAULT 'created',
  health        TEXT NOT NULL DEFAULT 'unknown',
  host_port     INTEGER,
  internal_port INTEGER,
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX containers_user_idx ON containers (user_id);
CREATE INDEX containers_image_idx ON containers (image_id);

CREATE TABLE events (
  id           BIGSERIAL PRIMARY KEY,
  type         TEXT NOT NULL,
  user_id      BIGINT,
  image_id     BIGINT,
  container_id BIGINT,
  app_hostname TEXT,
  payload      JSONB NOT NULL DEFAULT '{}'::jsonb,
  created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  published_at TIMESTAMPTZ
);
CREATE INDEX events_user_idx ON events (user_id, id);
CREATE INDEX events_unpublished_idx ON events (id) WHERE published_at IS NULL;
`;
