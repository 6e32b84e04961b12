/**
 * Every committed event NOTIFYs `berth_events` with its user's id, so a control plane holding a
 * long poll of GET /api/events (events/waiters.ts) answers as soon as one of that user's events
 * is recorded, on whichever control plane recorded it. (Postgres sends a transaction's
 * notifications at its commit, once per distinct payload, and none for a rollback.)
 */
export const sql = `
CREATE OR REPLACE FUNCTION berth_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('berth_events', NEW.user_id::text);
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION berth_events_notify();
`;
