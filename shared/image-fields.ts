/**
 * The shape of an image's upload fields, one set of rules for the control plane (the JSON schema
 * of POST and PATCH /api/images in control-plane/images/fields.ts is built from these) and the CLI
 * (`berth deploy` refuses a bad flag with the same words before it packs and uploads anything).
 * Like shared/tag.ts for traffic tags. The CPU amount (0.01–256) is cpuAmount's; what needs more
 * than that stays on the control plane: the memory amount (6m–1t) and the operator's maxima,
 * which only it knows. The app hostname's rules are shared/hostname.ts appHostnameProblem, used by both.
 *
 * Patterns are JSON-schema strings (ajv compiles them with the `u` flag; `fieldProblem` does too).
 * cpu_limit and memory_limit have no minLength: their patterns refuse "" with the helpful words.
 */
export const IMAGE_TEXT_FIELDS = {
  name: {
    minLength: 1, maxLength: 63, pattern: '^[a-z0-9]+(?:[._-][a-z0-9]+)*$',
    help: 'lower-case letters and digits, separated by single ".", "_" or "-" (a Docker repository name)',
  },
  tag: {
    minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_][A-Za-z0-9_.-]*$',
    help: 'letters, digits, "_", "." and "-", not starting with "." or "-" (a Docker tag)',
  },
  cpu_limit: {
    maxLength: 16, pattern: '^(?:\\d+(?:\\.\\d+)?|\\d+m)$',
    help: 'a number of CPUs like "0.5" or "2", or millicores like "500m"',
  },
  memory_limit: {
    maxLength: 16, pattern: '^\\d+(?:\\.\\d+)?\\s*(?:[bBkKmMgGtT](?:[iI]?[bB])?)?$',
    help: 'a size like "512m", "1g", "256Mi" or a byte count',
  },
  health_path: {
    minLength: 1, maxLength: 256, pattern: '^/[\\x21-\\x7e]*$',
    help: 'an absolute URL path like "/healthz" (no spaces)',
  },
} as const;

/** The integer fields' bounds (inclusive). */
export const IMAGE_INT_FIELDS = {
  container_port: { min: 1, max: 65535 },
  min_instances: { min: 0, max: 100 },
  max_instances: { min: 1, max: 100 },
  container_concurrency: { min: 0, max: 1000 },
  target_utilization: { min: 1, max: 100 },
  scale_down_delay_s: { min: 0, max: 3600 },
  /** how long a request may wait for the app's response, as Cloud Run's --timeout */
  request_timeout_s: { min: 1, max: 3600 },
  /** up to how many GET requests the proxies pipeline on one connection to an instance (1 = never) */
  upstream_pipeline: { min: 1, max: 16 },
} as const;

export type ImageTextField = keyof typeof IMAGE_TEXT_FIELDS;

const PATTERNS = Object.fromEntries(Object.entries(IMAGE_TEXT_FIELDS).map(([k, r]) => [k, new RegExp(r.pattern, 'u')])) as Record<ImageTextField, RegExp>;

/** Why `value` is not a valid `field`, or null when it is (its length and pattern, as the control plane's schema checks them). */
export function fieldProblem(field: ImageTextField, value: string): string | null {
  const rule: { minLength?: number; maxLength: number; help: string } = IMAGE_TEXT_FIELDS[field];
  if (value.length < (rule.minLength ?? 0)) return 'must not be empty';
  if (value.length > rule.maxLength) return `must be at most ${rule.maxLength} characters`;
  if (!PATTERNS[field].test(value)) return `must be ${rule.help}`;
  return null;
}

/** "0.5" → 0.5 CPUs, "500m" → 0.5 (to the millicore); null when not between 0.01 and 256 (CPU_RANGE). */
export function cpuAmount(s: string): number | null {
  const v = s.endsWith('m') ? Number(s.slice(0, -1)) / 1000 : Number(s);
  return Number.isFinite(v) && v >= 0.01 && v <= 256 ? Math.round(v * 1000) / 1000 : null;
}
export const CPU_RANGE = 'between 0.01 and 256 CPUs';
