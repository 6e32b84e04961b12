/**
 * Metering and billing: the proxies' metering streams (last applied sequence number per stream:
 * each batch is applied once), per-minute request rows, and one usage record per container run
 * (opened when the container starts, closed when it stops, crashes or is deleted) with the CPU and
 * memory it was given and what Docker's stats say it used. No foreign keys: the history outlives
 * deleted images and containers (bills must not change when an app is deleted).
 */
export const sql = `
CREATE TABLE metering_streams (
  stream     TEXT PRIMARY KEY,
  last_seq   BIGINT NOT NULL DEFAULT 0,
  batches    BIGINT NOT NULL DEFAULT 0,
  first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_seen  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE request_minutes (
  minute         TIMESTAMPTZ NOT NULL,
  user_id        BIGINT NOT NULL,
  image_id       BIGINT NOT NULL,
  -- 0: requests no container answered (no capacity, queue timeouts, refusals)
  container_id   BIGINT NOT NULL DEFAULT 0,
  app_hostname   TEXT NOT NULL,
  requests       BIGINT NOT NULL DEFAULT 0,
  s1xx           BIGINT NOT NULL DEFAULT 0,
  s2xx           BIGINT NOT NULL DEFAULT 0,
  s3xx           BIGINT NOT NULL DEFAULT 0,
  s4xx           BIGINT NOT NULL DEFAULT 0,
  s5xx           BIGINT NOT NULL DEFAULT 0,
  proxy_errors   BIGINT NOT NULL DEFAULT 0,
  latency_ms_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
  latency_count  BIGINT NOT NULL DEFAULT 0,
  buckets        BIGINT[] NOT NULL,
  bytes_in       BIGINT NOT NULL DEFAULT 0,
  bytes_out      BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (image_id, container_id, minute)
);
CREATE INDEX request_minutes_user_idx ON request_minutes (user_id, minute);

CREATE TABLE usage_records (
  id                    BIGSERIAL PRIMARY KEY,
  user_id               BIGINT NOT NULL,
  image_id              BIGINT NOT NULL,
  container_id          BIGINT NOT NULL,
  app_hostname          TEXT NOT NULL,
  docker_id             TEXT,
  vcpu                  NUMERIC NOT NULL,
  memory_bytes          BIGINT NOT NULL,
  start_time            TIMESTAMPTZ NOT NULL,
  end_time              TIMESTAMPTZ,
  end_reason            TEXT,
  cpu_seconds_used      DOUBLE PRECISION NOT NULL DEFAULT 0,
  memory_byte_seconds   DOUBLE PRECISION NOT NULL DEFAULT 0,
  memory_peak_bytes     BIGINT NOT NULL DEFAULT 0,
  samples               INTEGER NOT NULL DEFAULT 0,
  last_sample_at        TIMESTAMPTZ,
  CHECK (end_time IS NULL OR end_time >= start_time)
);
CREATE UNIQUE INDEX usage_records_open_key ON usage_records (container_id) WHERE end_time IS NULL;
CREATE INDEX usage_records_user_idx ON usage_records (user_id, start_time);
CREATE INDEX usage_records_image_idx ON usage_records (image_id, start_time);
`;
