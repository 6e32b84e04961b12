/**
 * Every committed change to a row the route table is read from (discovery/route-table.ts: apps,
 * images, containers, app_invokers) NOTIFYs `berth_routes` with the app's hostname, so each
 * control plane's route hub (discovery/hub.ts) reads again the routes of the apps that changed —
 * on whichever control plane they changed — not those of every app. (Postgres sends a
 * transaction's notifications at its commit, once per distinct payload, and none for a rollback.)
 *
 * An UPDATE notifies only when it sets a column the routes are read from (readAppRoutes' query):
 * a build's log written every second, a revision's last_active_at every minute, tell nobody. A
 * column that query comes to read must be added to its table's list here (in a new migration).
 */
export const sql = `
CREATE OR REPLACE FUNCTION berth_routes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  host text;
  image bigint;
BEGIN
  IF TG_TABLE_NAME = 'containers' THEN
    IF TG_OP = 'DELETE' THEN image := OLD.image_id; ELSE image := NEW.image_id; END IF;
    SELECT i.app_hostname INTO host FROM images i WHERE i.id = image;
  ELSIF TG_OP = 'DELETE' THEN
    host := OLD.app_hostname;
  ELSE
    host := NEW.app_hostname;
    -- (an app's hostname never changes; if a row ever moved, its old app is told too)
    IF TG_OP = 'UPDATE' THEN
      IF OLD.app_hostname IS DISTINCT FROM NEW.app_hostname AND OLD.app_hostname IS NOT NULL THEN
        PERFORM pg_notify('berth_routes', OLD.app_hostname);
      END IF;
    END IF;
  END IF;
  -- (a container whose image went first in the same transaction: the image's own row told)
  IF host IS NOT NULL THEN
    PERFORM pg_notify('berth_routes', host);
  END IF;
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS apps_routes_notify ON apps;
CREATE TRIGGER apps_routes_notify AFTER INSERT OR DELETE OR UPDATE OF app_hostname, private, traffic, pending_image_id, deleting_at
  ON apps FOR EACH ROW EXECUTE FUNCTION berth_routes_notify();
DROP TRIGGER IF EXISTS images_routes_notify ON images;
CREATE TRIGGER images_routes_notify AFTER INSERT OR DELETE OR UPDATE OF app_hostname, revision, status, routable_at, min_instances,
  min_instances_provisioned, container_concurrency, request_timeout_s, session_affinity, upstream_pipeline
  ON images FOR EACH ROW EXECUTE FUNCTION berth_routes_notify();
DROP TRIGGER IF EXISTS containers_routes_notify ON containers;
CREATE TRIGGER containers_routes_notify AFTER INSERT OR DELETE OR UPDATE OF image_id, status, desired, health, host_port
  ON containers FOR EACH ROW EXECUTE FUNCTION berth_routes_notify();
DROP TRIGGER IF EXISTS app_invokers_routes_notify ON app_invokers;
CREATE TRIGGER app_invokers_routes_notify AFTER INSERT OR DELETE OR UPDATE OF app_hostname, token_sha256
  ON app_invokers FOR EACH ROW EXECUTE FUNCTION berth_routes_notify();
`;
