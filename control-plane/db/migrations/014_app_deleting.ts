/**
 * DELETE /api/apps/:host removes the app's instances before its rows (apps/delete.ts). While it
 * does, `deleting_at` is set: no revision of the app serves (route table, reconcile loop,
 * autoscaler and wakes all go by servingRevisions), and an upload under the hostname waits for
 * the delete and is refused.
 */
export const sql = `
ALTER TABLE apps ADD COLUMN IF NOT EXISTS deleting_at TIMESTAMPTZ;
`;
