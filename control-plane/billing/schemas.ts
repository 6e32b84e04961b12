import { dateTime, idSchema, nullableDateTime, nullableInteger, nullableString, object } from '../http/responses.js';

/**
 * Response schemas of the billing routes (plugin.ts). Amounts (`*_cost`, `amount`, `total`, rates)
 * are whole micro-units of the currency (1 USD = 1000000), with a `*_formatted` decimal string;
 * quantities (seconds, minutes, vCPU) are numbers rounded to 3 decimals.
 */

const micros = { type: 'integer', description: 'micro-units of the currency' } as const;
const plan = { type: 'string', enum: ['cloud_run', 'per_minute'] } as const;

/** `pricingView()`: the configured `Pricing` (pricing.ts) and the unit of its amounts. */
export const pricingSchema = object({
  plan,
  currency: { type: 'string' },
  vcpu_hour_micros: { type: 'integer' },
  gib_hour_micros: { type: 'integer' },
  million_requests_micros: { type: 'integer' },
  container_minute_micros: { type: 'integer' },
  rounding_ms: { type: 'integer', description: 'instance time of a run is rounded up to a multiple of this' },
  unit: { type: 'string' },
});

/** `summary()`: one image's (revision's) usage and cost over all its runs and requests. */
const summaryProperties = {
  image_id: idSchema,
  app_hostname: { type: 'string' },
  revision: { ...nullableInteger, description: 'the app revision the image is (null once the image is deleted: its usage stays billed)' },
  total_containers: { type: 'integer' },
  active_containers: { type: 'integer' },
  total_runs: { type: 'integer' },
  total_minutes: { type: 'number' },
  vcpu_seconds: { type: 'number' },
  gib_seconds: { type: 'number' },
  cpu_seconds_used: { type: 'number', description: 'CPU time the containers used (Docker stats)' },
  requests: { type: 'integer', description: 'billable requests (answered by a container)' },
  instance_cost: micros,
  requests_cost: micros,
  total_cost: micros,
  total_cost_formatted: { type: 'string' },
  currency: { type: 'string' },
  last_activity: nullableDateTime,
} as const;
export const imageSummarySchema = object(summaryProperties);

/** `recordView()`: one usage record (a container's run), priced (an active one up to now). */
export const usageRecordSchema = object({
  id: idSchema,
  container_id: idSchema,
  image_id: idSchema,
  app_hostname: { type: 'string' },
  start_time: dateTime,
  end_time: nullableDateTime,
  status: { type: 'string', enum: ['Completed', 'Active'] },
  end_reason: nullableString,
  duration_seconds: { type: 'number' },
  billed_seconds: { type: 'number' },
  vcpu: { type: 'number' },
  memory_bytes: { type: 'integer' },
  vcpu_seconds: { type: 'number' },
  gib_seconds: { type: 'number' },
  cpu_seconds_used: { type: 'number' },
  avg_memory_bytes: { ...nullableInteger, description: 'null until a stats sample' },
  peak_memory_bytes: { type: 'integer' },
  samples: { type: 'integer' },
  cost: micros,
});

/** `GET /api/billing` */
export const billingSchema = object({
  user_id: idSchema,
  currency: { type: 'string' },
  plan,
  pricing: pricingSchema,
  images: { type: 'array', items: imageSummarySchema },
  total_cost: micros,
  total_cost_formatted: { type: 'string' },
});

/** `GET /api/billing/images/:id`: the summary, and a page of records (oldest first). */
export const imageBillingSchema = object({
  ...summaryProperties,
  plan,
  records: { type: 'array', items: usageRecordSchema },
  next_before: { ...nullableInteger, description: 'pass as ?before= for the next (older) page; null: no more' },
});

/** `GET /api/billing/invoices/:month` (JSON). */
export const invoiceSchema = object({
  user_id: idSchema,
  month: { type: 'string' },
  period_start: dateTime,
  period_end: dateTime,
  status: { type: 'string', enum: ['open', 'closed'] },
  plan,
  currency: { type: 'string' },
  lines: {
    type: 'array',
    items: object({
      app_hostname: { type: 'string' },
      resource: { type: 'string', enum: ['cpu', 'memory', 'requests', 'instance_time'] },
      quantity: { type: 'number' },
      unit: { type: 'string' },
      rate_micros: micros,
      rate_per: { type: 'string' },
      amount: micros,
      amount_formatted: { type: 'string' },
    }),
  },
  subtotal: micros,
  total: micros,
  total_formatted: { type: 'string' },
});
