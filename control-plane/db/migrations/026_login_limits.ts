/**
 * The login limits several control planes on one database count together, and a restart keeps
 * (auth/shared-limits.ts): failures per account from clients that never signed in to it, and the
 * addresses that did.
 */
export const sql = `
CREATE TABLE IF NOT EXISTS login_limits (
  key text PRIMARY KEY,
  window_start timestamptz NOT NULL,
  failures integer NOT NULL
);
CREATE INDEX IF NOT EXISTS login_limits_window_idx ON login_limits (window_start);
CREATE TABLE IF NOT EXISTS login_known_addresses (
  account text NOT NULL,
  address text NOT NULL,
  last_at timestamptz NOT NULL,
  PRIMARY KEY (account, address)
);
CREATE INDEX IF NOT EXISTS login_known_addresses_last_idx ON login_known_addresses (last_at);
`;
