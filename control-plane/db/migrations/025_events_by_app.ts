/**
 * Events are listed in transaction order (events/outbox.ts listEvents: txid, then id), a user's
 * or one app's (`GET /api/events?app=`, `berth events HOST`).
 */
export const sql = `
CREATE INDEX IF NOT EXISTS events_user_txid_idx ON events (user_id, txid, id);
CREATE INDEX IF NOT EXISTS events_user_app_txid_idx ON events (user_id, app_hostname, txid, id) WHERE app_hostname IS NOT NULL;
`;
