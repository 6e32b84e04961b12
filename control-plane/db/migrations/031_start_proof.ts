/**
 * What giving a revision up at start (apps/start-failure.ts) and proving one before it takes the
 * traffic (apps/repo.ts provingSql) read, each from its own row:
 * - `images.proof_required`: decided once, when a revision that scales from zero is deployed with
 *   traffic over an app with a revision that served (apps/repo.ts joinTraffic; later, every
 *   one deployed with traffic: an app's first revision is proven too). Read from other
 *   rows at every resolution, the rule let a proving revision become routable the moment a later
 *   deploy took the pending slot. The route table reads it: the images trigger gains it.
 * - `containers.app_exits` and `last_exit`: how many times an instance's app exited (or could not
 *   be run) by its own doing, and the last such reason with its last output. A status seen between
 *   two runs missed an app that died more than 30 s after each start (replaced in the same pass).
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS proof_required BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE containers ADD COLUMN IF NOT EXISTS app_exits INTEGER NOT NULL DEFAULT 0,
                       ADD COLUMN IF NOT EXISTS last_exit TEXT;
DROP TRIGGER IF EXISTS images_routes_notify ON images;
CREATE TRIGGER images_routes_notify AFTER INSERT OR DELETE OR UPDATE OF app_hostname, revision, status, routable_at, min_instances,
  min_instances_provisioned, container_concurrency, request_timeout_s, session_affinity, upstream_pipeline, start_failed_at, proof_required
  ON images FOR EACH ROW EXECUTE FUNCTION berth_routes_notify();
`;
