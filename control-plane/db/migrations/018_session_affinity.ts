/**
 * Per revision, session affinity (Cloud Run's `--session-affinity`): its route carries
 * `affinity`, and the proxies keep a client on the instance (and revision) that first answered it.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS session_affinity BOOLEAN NOT NULL DEFAULT false;
`;
