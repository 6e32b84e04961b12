/**
 * A deleted app's hostname stays its owner's for a while (BERTH_HOSTNAME_HOLD_DAYS): another
 * user claiming it at once would inherit its bookmarks, links, OAuth redirect addresses and the
 * cookies browsers keep for it.
 */
export const sql = `
CREATE TABLE IF NOT EXISTS hostname_holds (
  app_hostname TEXT PRIMARY KEY,
  user_id      BIGINT NOT NULL,
  released_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  until        TIMESTAMPTZ NOT NULL
);
`;
