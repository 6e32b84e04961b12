/**
 * Environment variables per revision (images/env.ts): set at upload, inherited by the next
 * revision, passed to the revision's containers. Values are never sent back by the API.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS env JSONB NOT NULL DEFAULT '{}'::jsonb;
`;
