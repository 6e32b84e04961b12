import { dateTime, idSchema, nullableDateTime, nullableInteger, nullableString, object } from '../http/responses.js';

/**
 * Response schemas of images and containers: `publicImage` and `publicContainer` (repo.ts) as
 * JSON schemas. Keep them in step: a property added there and not here is dropped from answers.
 */

/** `publicImage(row)`: an image (one revision of an app), without its build log. */
export const imageSchema = object({
  id: idSchema,
  user_id: idSchema,
  name: { type: 'string' },
  tag: { type: 'string' },
  app_hostname: { type: 'string' },
  revision: { type: 'integer', description: '1, 2, 3… per app' },
  container_port: { type: 'integer' },
  min_instances: { type: 'integer' },
  max_instances: { type: 'integer' },
  cpu_limit: { type: ['number', 'null'], description: 'CPUs (e.g. 0.5); null: no limit' },
  memory_limit: { ...nullableString, description: 'as given, e.g. "512m"; null: the default' },
  memory_limit_bytes: nullableInteger,
  health_path: { ...nullableString, description: 'HTTP health-check path; null: TCP connect check' },
  container_concurrency: { type: 'integer', description: 'most requests one instance is sent at once (0 = no limit)' },
  target_utilization: { type: 'integer', description: 'percent of container_concurrency the autoscaler aims at' },
  scale_down_delay_s: { type: 'integer' },
  request_timeout_s: { type: 'integer', description: 'how long the proxies wait for the response (head, then between body bytes) before 504' },
  session_affinity: { type: 'boolean', description: 'the proxies keep a client (cookie berth-affinity) on the instance, and revision, that first answered it' },
  upstream_pipeline: { type: 'integer', description: 'up to how many GET requests the proxies pipeline on one connection to an instance (1 = never)' },
  env_names: { type: 'array', items: { type: 'string' }, description: 'names of the environment variables the revision runs with (values are never shown)' },
  status: { type: 'string', enum: ['building', 'ready', 'build_failed'] },
  status_reason: nullableString,
  start_failed_at: { ...nullableDateTime, description: 'set when the revision could not start (its instances exit at start, or none became healthy in time): it takes no traffic and runs nothing' },
  start_failure: { ...nullableString, description: 'why it could not start: the instance\'s reason and its last output' },
  start_blocked: { ...nullableString, description: 'why none, or not all, of its instances can be made now (the per-user container quota is full); one none of whose instances runs is given up on past the start deadline' },
  joins_traffic: {
    type: ['string', 'null'], enum: ['all', 'latest', 'none', null],
    description: "how the deploy joined the app's traffic: all (it takes all of it once it can serve), latest (the app's split was set by hand and is kept, as Cloud Run keeps it: it takes the split's `latest` share), none (no_traffic, or a split by hand with no `latest` share); null for revisions deployed before this was recorded",
  },
  docker_image: { type: 'string' },
  docker_image_id: nullableString,
  build_logs_truncated: { type: 'boolean' },
  build_started_at: nullableDateTime,
  build_finished_at: nullableDateTime,
  created_at: dateTime,
  updated_at: dateTime,
});

/** `publicContainer(row)`: one instance of an image. */
export const containerSchema = object({
  id: idSchema,
  user_id: idSchema,
  image_id: idSchema,
  name: nullableString,
  docker_id: nullableString,
  status: { type: 'string', enum: ['creating', 'running', 'stopping', 'stopped', 'exited', 'failed'] },
  desired: { type: 'string', enum: ['running', 'stopped'], description: 'what the reconcile loop drives status towards' },
  health: { type: 'string', enum: ['unknown', 'healthy', 'unhealthy'] },
  status_reason: nullableString,
  host_port: nullableInteger,
  internal_port: nullableInteger,
  exit_code: nullableInteger,
  restart_count: { type: 'integer' },
  started_at: nullableDateTime,
  stopped_at: nullableDateTime,
  health_checked_at: nullableDateTime,
  healthy_at: nullableDateTime,
  created_at: dateTime,
  updated_at: dateTime,
});

export const containerListSchema = object({ containers: { type: 'array', items: containerSchema } });

/** `GET /api/images/with-containers`: each image with its containers. */
export const imageWithContainersSchema = object({ ...imageSchema.properties, containers: { type: 'array', items: containerSchema } });

/** `GET /api/images/:id/build-logs` without follow. */
export const buildLogsSchema = object({
  image_id: idSchema,
  status: imageSchema.properties.status,
  logs: { type: 'string' },
  truncated: { type: 'boolean' },
});

/** `GET /api/images/:id/autoscaling`: the autoscaler's view (autoscale/autoscaler.ts `AutoscaleStatus`, or the fallback). */
export const autoscalingSchema = object({
  image_id: idSchema,
  autoscaled: { type: 'boolean', description: 'false: the autoscaler has not seen it (off, or not the leader); counts from the database' },
  desired: { type: 'integer' },
  actual: { type: 'integer' },
  ready: { type: 'integer' },
  observed_concurrency: { type: 'number' },
  target_per_instance: { type: 'number' },
  panic: { type: 'boolean' },
  last_decision: {
    type: ['object', 'null'],
    required: ['at', 'from', 'to', 'reason'],
    properties: { at: dateTime, from: { type: 'integer' }, to: { type: 'integer' }, reason: { type: 'string' } },
  },
});
