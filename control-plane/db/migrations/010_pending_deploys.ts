/**
 * A revision deployed with traffic takes it only once it can serve: until then the app's stored
 * split keeps serving and `pending_image_id` names the revision waiting (apps/traffic.ts).
 * (IF NOT EXISTS: a development build of 007 had the column.)
 */
export const sql = `
ALTER TABLE apps ADD COLUMN IF NOT EXISTS pending_image_id BIGINT;
`;
