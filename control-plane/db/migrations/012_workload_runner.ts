/**
 * Which control plane runs a workload, and when it last said so: `runner` is that process's
 * instance id (set at start), `heartbeat_at` is refreshed every few seconds while the run goes.
 * A `running` row whose heartbeat is older than the limit (or absent: rows from before this
 * migration) is over — its control plane stopped without ending it — and any control plane marks
 * it `failed` (workloads/repo.ts failInterrupted); a run another live control plane is running is
 * left alone.
 */
export const sql = `
ALTER TABLE workloads ADD COLUMN runner TEXT, ADD COLUMN heartbeat_at TIMESTAMPTZ;
`;
