/**
 * Per revision, how long a request may wait for the app's response (Cloud Run's `--timeout`,
 * default 300 s, at most 3600): the proxies' headers and idle-body timeouts for its route.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS request_timeout_s INTEGER NOT NULL DEFAULT 300
  CHECK (request_timeout_s BETWEEN 1 AND 3600);
`;
