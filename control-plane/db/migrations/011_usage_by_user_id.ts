/**
 * Billing folds a user's usage records in id order (`WHERE user_id = $1 AND id > $2 ORDER BY id`):
 * without this index each batch scanned the user's rows and sorted them.
 */
export const sql = `
CREATE INDEX IF NOT EXISTS usage_records_user_id_idx ON usage_records (user_id, id);
`;
