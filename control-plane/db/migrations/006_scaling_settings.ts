/**
 * Per-app scaling settings (Cloud Run / Knative names): the most requests one instance is sent
 * at once (0 = no limit), the share of it the autoscaler aims at, and how long it waits before
 * scaling down.
 */
export const sql = `
-- apps that exist keep what they had (no cap); new uploads get Cloud Run's 80 (fields.ts)
ALTER TABLE images
  ADD COLUMN container_concurrency INTEGER NOT NULL DEFAULT 0 CHECK (container_concurrency BETWEEN 0 AND 1000),
  ADD COLUMN target_utilization INTEGER NOT NULL DEFAULT 70 CHECK (target_utilization BETWEEN 1 AND 100),
  ADD COLUMN scale_down_delay_s INTEGER NOT NULL DEFAULT 0 CHECK (scale_down_delay_s BETWEEN 0 AND 3600);
ALTER TABLE images ALTER COLUMN container_concurrency SET DEFAULT 80;
`;
