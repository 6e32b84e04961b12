/** One app's events, newest first or after an id (`GET /api/events?app=`, `berth events HOST`). */
export const sql = `
CREATE INDEX IF NOT EXISTS events_user_app_idx ON events (user_id, app_hostname, id) WHERE app_hostname IS NOT NULL;
`;
