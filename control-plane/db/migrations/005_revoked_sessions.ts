/**
 * Session JWTs are stateless; logging out revokes the one presented by recording its `jti`
 * until it would have expired anyway.
 */
export const sql = `
CREATE TABLE revoked_sessions (
  jti        TEXT PRIMARY KEY,
  user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX revoked_sessions_expires_idx ON revoked_sessions (expires_at);
`;
