/**
 * Events are listed by id (`GET /api/events?after=`), but ids are taken at insert and
 * transactions commit in any order: a reader that saw id 11 must not have skipped id 10 still
 * being committed. Each row records its transaction id; readers only see rows whose transaction
 * is older than every transaction still running, so no gap below them can fill in later.
 */
export const sql = `
ALTER TABLE events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
`;
