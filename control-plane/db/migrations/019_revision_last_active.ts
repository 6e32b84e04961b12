/**
 * When each revision last served (or was about to), kept by the reconcile loop at a minute's
 * resolution: retention (apps/retention.ts) deletes only revisions idle longer than its grace, so a
 * revision that served a moment ago stays to roll back to. Existing revisions count as active now.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS last_active_at TIMESTAMPTZ NOT NULL DEFAULT now();
`;
