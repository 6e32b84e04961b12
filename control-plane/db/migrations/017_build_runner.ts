/**
 * Which control plane builds an image, and when it last said so. `build_runner` names the data
 * directory that holds the build context (host:path: it survives the process, so a restart
 * recovers its own builds at once); `build_heartbeat_at` is refreshed every few seconds while the
 * build is queued or running. Another control plane on the same database recovers a `building`
 * row only once its heartbeat is stale (images/build-queue.ts), instead of failing every build it
 * did not start.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS build_runner TEXT, ADD COLUMN IF NOT EXISTS build_heartbeat_at TIMESTAMPTZ;
`;
