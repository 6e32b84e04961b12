/** The JSON schema of a workload start (`POST /api/workloads`, `POST /workload/start`). */
import { MAX_STAGES, PATTERNS, type PatternName } from '../../bench/workload/patterns.js';
import { MAX_HEADERS } from '../../bench/workload/request.js';
import type { WorkloadConfigRow } from './repo.js';

/** The API's own bounds (configuration may only lower them). */
export const API_MAX_RPS = 50_000;
export const API_MAX_DURATION_S = 3600;
export const MAX_BODY_CHARS = 64 * 1024;

const rate = { type: 'number', minimum: 0, maximum: API_MAX_RPS } as const;
const hostname = { type: 'string', minLength: 1, maxLength: 253 } as const;

/** The body of `POST /api/workloads` (the original platform's field names). */
export const startBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    app_hostname: hostname,
    app_hostnames: { type: 'array', minItems: 1, maxItems: 10, items: hostname },
    pattern: { type: 'string', enum: [...PATTERNS], default: 'constant' },
    rps: { type: 'number', minimum: 1, maximum: API_MAX_RPS },
    duration_seconds: { type: 'number', minimum: 1, maximum: API_MAX_DURATION_S },
    ramp_to_rps: rate,
    stages: {
      type: 'array', minItems: 1, maxItems: MAX_STAGES,
      items: {
        type: 'object', additionalProperties: false, required: ['duration_seconds', 'rps'],
        properties: { duration_seconds: { type: 'number', exclusiveMinimum: 0, maximum: API_MAX_DURATION_S }, rps: rate },
      },
    },
    path: { type: 'string', minLength: 1, maxLength: 8192, default: '/' },
    method: { type: 'string', minLength: 1, maxLength: 20, default: 'GET' },
    headers: { type: 'object', maxProperties: MAX_HEADERS, additionalProperties: { type: 'string', maxLength: 8192 } },
    body: { type: 'string', maxLength: MAX_BODY_CHARS },
    connections: { type: 'integer', minimum: 1, maximum: 10_000 },
    timeout_ms: { type: 'integer', minimum: 10, maximum: 600_000, default: 10_000 },
  },
} as const;

/** The body as the schema lets it through: the stored config's fields, hosts and rate still to check. */
export type StartBody = Omit<WorkloadConfigRow, 'app_hostnames' | 'pattern' | 'rps' | 'duration_seconds'> & {
  app_hostname?: string;
  app_hostnames?: string[];
  pattern: PatternName;
  rps?: number;
  duration_seconds?: number;
};

