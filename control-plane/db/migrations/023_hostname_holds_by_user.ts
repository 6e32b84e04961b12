/** A user's holds, newest first: the cap on holds per user (apps/repo.ts holdHostname) trims the oldest. */
export const sql = `
CREATE INDEX IF NOT EXISTS hostname_holds_user ON hostname_holds (user_id, released_at DESC);
`;
