/**
 * Issue 4: container lifecycle columns, health-check path per image, the route-table version
 * sequence, the Kafka relay's own outbox marker, and a cluster id that labels every Docker
 * container this database manages (so orphans are recognised without touching other clusters).
 */
export const sql = `
UPDATE containers SET status = 'creating' WHERE status = 'created';
ALTER TABLE containers ALTER COLUMN status SET DEFAULT 'creating';
ALTER TABLE containers
  ADD COLUMN desired           TEXT NOT NULL DEFAULT 'running',
  ADD COLUMN status_reason     TEXT,
  ADD COLUMN container_ip      TEXT,
  ADD COLUMN exit_code         INTEGER,
  ADD COLUMN restart_count     INTEGER NOT NULL DEFAULT 0,
  ADD COLUMN started_at        TIMESTAMPTZ,
  ADD COLUMN stopped_at        TIMESTAMPTZ,
  ADD COLUMN health_checked_at TIMESTAMPTZ,
  ADD COLUMN healthy_at        TIMESTAMPTZ;
ALTER TABLE containers ADD CONSTRAINT containers_desired_check CHECK (desired IN ('running', 'stopped'));
ALTER TABLE containers ADD CONSTRAINT containers_status_check
  CHECK (status IN ('creating', 'running', 'stopping', 'stopped', 'exited', 'failed'));
ALTER TABLE containers ADD CONSTRAINT containers_health_check CHECK (health IN ('unknown', 'healthy', 'unhealthy'));
CREATE UNIQUE INDEX containers_name_key ON containers (name) WHERE name IS NOT NULL;
CREATE INDEX containers_status_idx ON containers (status);

ALTER TABLE images ADD COLUMN health_path TEXT;

ALTER TABLE events ADD COLUMN kafka_published_at TIMESTAMPTZ;
CREATE INDEX events_kafka_unpublished_idx ON events (id) WHERE kafka_published_at IS NULL;

CREATE SEQUENCE route_table_version_seq;

CREATE TABLE berth_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO berth_settings (key, value) VALUES ('cluster_id', substr(md5(random()::text || clock_timestamp()::text), 1, 12));
`;
