import { TAG_MAX_LENGTH } from '../../shared/tag.js';
import { Ajv } from 'ajv';
import { appHostnameProblem, isValidHostPattern, normalizeHost } from '../../shared/hostname.js';
import { CPU_RANGE, cpuAmount, IMAGE_INT_FIELDS as N, IMAGE_TEXT_FIELDS as T, type ImageTextField } from '../../shared/image-fields.js';
import { ApiError, badRequest } from '../http/errors.js';
import { hardenNumbers, int, numberAjvOptions } from '../http/schemas.js';

/** A text field's JSON schema from the shared rule (its help is for messages, not the schema). */
function text<F extends ImageTextField>(field: F) {
  const { help: _help, ...rule } = T[field];
  return { type: 'string', ...rule } as const;
}

/**
 * The multipart fields of POST /api/images, validated by a JSON schema (ajv coerces the
 * strings multipart delivers), then parsed further: hostname normalisation, CPU and memory.
 * Patterns, lengths and bounds come from shared/image-fields.ts, which `berth deploy` checks too.
 */
export const imageFieldsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'app_hostname'],
  properties: {
    name: text('name'),
    tag: { ...text('tag'), default: 'latest' },
    app_hostname: { type: 'string', minLength: 1, maxLength: 300 },
    container_port: int(N.container_port.min, N.container_port.max, { default: 8080 }),
    min_instances: int(N.min_instances.min, N.min_instances.max, { default: 1 }),
    max_instances: int(N.max_instances.min, N.max_instances.max),
    cpu_limit: text('cpu_limit'),
    memory_limit: text('memory_limit'),
    health_path: text('health_path'),
    container_concurrency: int(N.container_concurrency.min, N.container_concurrency.max, { default: 80 }),
    target_utilization: int(N.target_utilization.min, N.target_utilization.max, { default: 70 }),
    scale_down_delay_s: int(N.scale_down_delay_s.min, N.scale_down_delay_s.max, { default: 0 }),
    request_timeout_s: int(N.request_timeout_s.min, N.request_timeout_s.max, { default: 300 }),
    // Cloud Run's --session-affinity: the proxies keep a client on the instance that answered it
    session_affinity: { type: 'boolean', default: false },
    // HTTP/1.1 pipelining from the proxies to the instances (proxy/README.md "Pipelining")
    upstream_pipeline: int(N.upstream_pipeline.min, N.upstream_pipeline.max, { default: 1 }),
    // a new revision of an app: take no traffic yet (the split stays as it is), and/or get a tag URL
    no_traffic: { type: 'boolean', default: false },
    traffic_tag: { type: 'string', minLength: 1, maxLength: TAG_MAX_LENGTH },
    // environment variables (images/env.ts checks them): set/replace, remove, start from nothing
    env: { type: 'string', maxLength: 256 * 1024 },
    env_unset: { type: 'string', maxLength: 64 * 1024 },
    env_clear: { type: 'boolean', default: false },
  },
} as const;

/** An upload field's schema without its default (PATCH and revise leave what they do not name alone). */
export function noDefault<T extends object>(schema: T): Omit<T, 'default'> {
  const { default: _unused, ...rest } = schema as T & { default?: unknown };
  return rest;
}

/**
 * The upload's settings a revision can change without a build (`POST /api/apps/:host/revisions`):
 * every field but the image's name and tag, the hostname and the environment (which has its own).
 */
export const REVISION_SETTINGS = [
  'container_port', 'min_instances', 'max_instances', 'container_concurrency', 'target_utilization', 'scale_down_delay_s',
  'request_timeout_s', 'session_affinity', 'upstream_pipeline', 'cpu_limit', 'memory_limit', 'health_path', 'no_traffic', 'traffic_tag',
] as const;
export type RevisionSettings = { [K in (typeof REVISION_SETTINGS)[number]]?: string | number | boolean };
/** Their JSON schemas: the upload's own, without defaults. */
export const revisionSettingsSchema = Object.fromEntries(REVISION_SETTINGS.map((k) => [k, noDefault(imageFieldsSchema.properties[k])]));

/** Upload fields a new revision takes from the previous one when the upload leaves them out. */
export const INHERITED_FIELDS = [
  'name', 'tag', 'container_port', 'min_instances', 'max_instances', 'cpu_limit', 'memory_limit', 'health_path',
  'container_concurrency', 'target_utilization', 'scale_down_delay_s', 'request_timeout_s', 'session_affinity', 'upstream_pipeline',
] as const;

// Multipart delivers strings; ajv coerces "1e400" to Infinity after its type check, so the
// `finite` keyword (http/schemas.ts) is what turns that into a 400.
const ajv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: false, strict: true, ...numberAjvOptions });
const validate = ajv.compile(hardenNumbers(imageFieldsSchema));

const FIELD_HELP: Record<string, string> = Object.fromEntries(Object.entries(T).map(([field, rule]) => [field, rule.help]));

export interface ImageFields {
  name: string;
  tag: string;
  app_hostname: string;
  container_port: number;
  min_instances: number;
  max_instances: number;
  cpu_limit: number | null;
  memory_limit: string | null;
  memory_limit_bytes: number | null;
  /** HTTP health-check path; null → TCP connect check */
  health_path: string | null;
  /** most requests one instance is sent at once (0 = no limit); the proxies enforce it */
  container_concurrency: number;
  /** the autoscaler aims at container_concurrency × target_utilization / 100 per instance */
  target_utilization: number;
  scale_down_delay_s: number;
  /** the proxies wait this long for the response's head, and between body bytes (then 504) */
  request_timeout_s: number;
  /** the proxies keep a client (by cookie) on the instance, and revision, that first answered it */
  session_affinity: boolean;
  /** the proxies pipeline up to this many GET requests on one connection to an instance (1 = never) */
  upstream_pipeline: number;
}

/** The fields of one upload: the image's own, and how its revision joins the app's traffic. */
export interface UploadFields extends ImageFields {
  no_traffic: boolean;
  traffic_tag: string | null;
  /** the raw environment changes, applied to the previous revision's set by images/env.ts */
  envChanges: { env?: string; env_unset?: string; env_clear: boolean };
}

/** Validate and normalise; throws ApiError 400 naming the field. */
export function parseImageFields(raw: Record<string, string>): UploadFields {
  const data: Record<string, unknown> = { ...raw };
  if (!validate(data)) {
    const e = validate.errors![0];
    const field = e.instancePath.replace(/^\//, '') || (e.params as { missingProperty?: string }).missingProperty || '';
    if (e.keyword === 'required') throw badRequest(`field "${field}" is required`);
    if (e.keyword === 'additionalProperties') throw badRequest(`unknown field "${(e.params as { additionalProperty: string }).additionalProperty}"`);
    if (e.keyword === 'pattern' && FIELD_HELP[field]) throw badRequest(`field "${field}" must be ${FIELD_HELP[field]}`);
    throw badRequest(`field "${field}" ${e.message}`);
  }
  const host = normalizeHost(String(data.app_hostname));
  if (!host || !isValidHostPattern(host)) throw badRequest(`field "app_hostname": "${data.app_hostname}" is not a valid hostname`);
  checkAppHostname(host);
  const min = (data.min_instances as number) + 0; // + 0: "-0" is 0
  const max = ((data.max_instances as number | undefined) ?? Math.max(min, 1)) + 0;
  if (min > max) throw badRequest(`min_instances (${min}) must not exceed max_instances (${max})`);
  const cpu = data.cpu_limit === undefined ? null : parseCpu(String(data.cpu_limit));
  const mem = data.memory_limit === undefined ? null : parseMemory(String(data.memory_limit));
  return {
    name: String(data.name),
    tag: String(data.tag),
    app_hostname: host,
    container_port: (data.container_port as number) + 0,
    min_instances: min,
    max_instances: max,
    cpu_limit: cpu,
    memory_limit: mem?.text ?? null,
    memory_limit_bytes: mem?.bytes ?? null,
    health_path: data.health_path === undefined ? null : String(data.health_path),
    container_concurrency: (data.container_concurrency as number) + 0,
    target_utilization: (data.target_utilization as number) + 0,
    scale_down_delay_s: (data.scale_down_delay_s as number) + 0,
    request_timeout_s: (data.request_timeout_s as number) + 0,
    session_affinity: data.session_affinity === true,
    upstream_pipeline: (data.upstream_pipeline as number) + 0,
    no_traffic: data.no_traffic === true,
    traffic_tag: data.traffic_tag === undefined ? null : String(data.traffic_tag),
    envChanges: {
      ...(data.env === undefined ? {} : { env: String(data.env) }),
      ...(data.env_unset === undefined ? {} : { env_unset: String(data.env_unset) }),
      env_clear: data.env_clear === true,
    },
  };
}

/** The rules of shared/hostname.ts appHostnameProblem as the API's 400. */
export function checkAppHostname(host: string): void {
  const why = appHostnameProblem(host);
  if (why !== null) throw badRequest(`field "app_hostname": "${host}" ${why}`);
}

/** "0.5" → 0.5 CPUs, "500m" → 0.5 (shared/image-fields.ts cpuAmount). Between 0.01 and 256. */
export function parseCpu(s: string): number {
  const v = cpuAmount(s);
  if (v === null) throw badRequest(`field "cpu_limit": "${s}" must be ${CPU_RANGE}`);
  return v;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
/** "512m", "512Mi", "1g", "1.5G", "1048576" → bytes (binary units). Between 6 MiB (Docker's minimum) and 1 TiB. */
export function parseMemory(s: string): { bytes: number; text: string } {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmgt])?(?:i?b)?$/i.exec(s.trim());
  if (!m) throw badRequest(`field "memory_limit" must be ${FIELD_HELP.memory_limit}`);
  const unit = (m[2] ?? '').toLowerCase();
  const bytes = Math.floor(Number(m[1]) * UNITS[unit]);
  if (bytes < 6 * 1024 ** 2 || bytes > 1024 ** 4) throw new ApiError(400, 'invalid_request', `field "memory_limit": "${s}" must be between 6m and 1t`);
  return { bytes, text: `${m[1]}${unit || 'b'}` };
}
