/**
 * An API token made with another API token (not a session) remembers it: it expires no later than
 * its parent and is revoked with it (auth/plugin.ts), so a leaked short-lived token cannot mint
 * itself a permanent one.
 */
export const sql = `
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS parent_id BIGINT;
CREATE INDEX IF NOT EXISTS api_tokens_parent_idx ON api_tokens (parent_id) WHERE parent_id IS NOT NULL;
`;
