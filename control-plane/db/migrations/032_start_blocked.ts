/**
 * `images.start_blocked` and `start_blocked_at`: why none of a revision's instances can be made
 * now (the user's container quota is full), since when. Written by the reconcile loop when it
 * provisions the revision (containers/service.ts), cleared once an instance can be made; the
 * start verdict gives a revision that never served up when it stays so past the start deadline
 * (apps/start-failure.ts), as Knative does a revision whose pods cannot be scheduled. Before, such
 * a deploy waited silently until its client gave up. Not read by the route table: no trigger change.
 */
export const sql = `
ALTER TABLE images ADD COLUMN IF NOT EXISTS start_blocked TEXT,
                   ADD COLUMN IF NOT EXISTS start_blocked_at TIMESTAMPTZ;
`;
