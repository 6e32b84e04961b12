/**
 * `min_instances` is provisioned once: when an image is ready, the reconcile loop creates that
 * many containers and sets `min_instances_provisioned` in the same transaction. From then on the
 * containers keep existing (a crashed one is replaced under the same row), but a container the
 * user stops stays stopped and one the user deletes is not recreated: the user's intent wins, and
 * an image whose containers were all deleted can be deleted. Images that were ready before this
 * migration were provisioned by the previous reconcile loop.
 */
export const sql = `
ALTER TABLE images ADD COLUMN min_instances_provisioned boolean NOT NULL DEFAULT false;
UPDATE images SET min_instances_provisioned = true WHERE status = 'ready';
`;
