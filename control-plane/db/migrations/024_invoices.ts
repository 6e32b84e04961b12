/**
 * Closed invoices (billing/invoice.ts): a month's invoice is computed once after the month ends
 * and kept as it was, whatever the prices or late counts do afterwards. No foreign key, as with
 * the rest of the billing history (009_metering).
 */
export const sql = `
CREATE TABLE IF NOT EXISTS invoices (
  user_id   BIGINT NOT NULL,
  month     TEXT NOT NULL,
  body      JSONB NOT NULL,
  closed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, month)
);
`;
