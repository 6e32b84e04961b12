/**
 * A revision that cannot start (its instances exit at start, or none becomes healthy within the
 * start deadline; apps/start-failure.ts) is marked failed on the server, as Cloud Run marks a
 * revision not ready: `start_failed_at` and why (`start_failure`, the instance's reason and last
 * output). It takes no traffic, is no longer `latest`, and runs nothing. The route table reads it:
 * the images trigger of 029 gains the column.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS start_failed_at TIMESTAMPTZ,
                   ADD COLUMN IF NOT EXISTS start_failure TEXT;
DROP TRIGGER IF EXISTS images_routes_notify ON images;
CREATE TRIGGER images_routes_notify AFTER INSERT OR DELETE OR UPDATE OF app_hostname, revision, status, routable_at, min_instances,
  min_instances_provisioned, container_concurrency, request_timeout_s, session_affinity, upstream_pipeline, start_failed_at
  ON images FOR EACH ROW EXECUTE FUNCTION berth_routes_notify();
`;
