/**
 * Workload runs (`POST /api/workloads`, `berth load` through the API): the config as accepted, the
 * status, and the metrics (written every few seconds while running, final at the end). A run that
 * was `running` when the control plane stopped is marked `failed` with a reason at the next start.
 */
export const sql = `
CREATE TABLE workloads (
  id            BIGSERIAL PRIMARY KEY,
  user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  status        TEXT NOT NULL CHECK (status IN ('running', 'completed', 'stopped', 'failed')),
  status_reason TEXT,
  config        JSONB NOT NULL,
  metrics       JSONB,
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at   TIMESTAMPTZ,
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX workloads_user_idx ON workloads (user_id, id DESC);
CREATE INDEX workloads_running_idx ON workloads (status) WHERE status = 'running';
`;
