import type { Queryable } from '../db/pool.js';
import type { ImageFields } from './fields.js';

export type ImageStatus = 'building' | 'ready' | 'build_failed';

/**
 * How a deploy joined its app's traffic: `all` once it can serve (the split was `latest` alone),
 * `latest` (a split set by hand is kept, as Cloud Run keeps it: the revision takes its `latest`
 * share), `none` (`no_traffic`, or a split by hand with no `latest` share).
 */
export type JoinsTraffic = 'all' | 'latest' | 'none';

/** An images row: the validated upload fields plus build state. */
export interface ImageRow extends ImageFields {
  id: number;
  user_id: number;
  /** 1, 2, 3… per app (app_hostname) */
  revision: number;
  /** the revision's environment variables (images/env.ts); never sent back by the API */
  env: Record<string, string>;
  /** when it could first take traffic (see migration 007); null until then */
  routable_at: Date | null;
  /** when it was given up on, never having served, and why (apps/start-failure.ts, migration 030) */
  start_failed_at: Date | null;
  start_failure: string | null;
  /** started once to prove it can serve before it takes the traffic (apps/repo.ts provingSql, migration 031) */
  proof_required: boolean;
  /** why none of its instances can be made now (the container quota is full), since when (migration 032) */
  start_blocked: string | null;
  start_blocked_at: Date | null;
  /** how it joined the app's traffic when deployed (apps/repo.ts joinTraffic, migration 033); null before */
  joins_traffic: JoinsTraffic | null;
  status: ImageStatus;
  status_reason: string | null;
  docker_image: string;
  docker_image_id: string | null;
  build_logs: string;
  build_logs_truncated: boolean;
  /** when it last served or was about to (the reconcile loop marks it; see migration 019) */
  last_active_at: Date;
  /** the reconcile loop created the min_instances containers (once; see migration 004) */
  min_instances_provisioned: boolean;
  build_started_at: Date | null;
  build_finished_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);

/** The API shape of an image (DESIGN.md field names; no build logs). */
export function publicImage(r: ImageRow) {
  return {
    id: r.id,
    user_id: r.user_id,
    name: r.name,
    tag: r.tag,
    app_hostname: r.app_hostname,
    revision: r.revision,
    env_names: Object.keys(r.env ?? {}).sort(),
    container_port: r.container_port,
    min_instances: r.min_instances,
    max_instances: r.max_instances,
    cpu_limit: r.cpu_limit,
    memory_limit: r.memory_limit,
    memory_limit_bytes: r.memory_limit_bytes,
    health_path: r.health_path ?? null,
    container_concurrency: r.container_concurrency,
    target_utilization: r.target_utilization,
    scale_down_delay_s: r.scale_down_delay_s,
    request_timeout_s: r.request_timeout_s,
    session_affinity: r.session_affinity,
    upstream_pipeline: r.upstream_pipeline,
    status: r.status,
    status_reason: r.status_reason,
    start_failed_at: iso(r.start_failed_at),
    start_failure: r.start_failed_at ? r.start_failure : null,
    start_blocked: r.start_failed_at ? null : r.start_blocked,
    joins_traffic: r.joins_traffic ?? null,
    docker_image: r.docker_image,
    docker_image_id: r.docker_image_id,
    build_logs_truncated: r.build_logs_truncated,
    build_started_at: iso(r.build_started_at),
    build_finished_at: iso(r.build_finished_at),
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}

export interface ContainerRow {
  id: number;
  user_id: number;
  image_id: number;
  docker_id: string | null;
  name: string | null;
  status: 'creating' | 'running' | 'stopping' | 'stopped' | 'exited' | 'failed';
  health: 'unknown' | 'healthy' | 'unhealthy';
  host_port: number | null;
  internal_port: number | null;
  /** what the user (or min_instances) wants: the reconcile loop drives status towards it */
  desired: 'running' | 'stopped';
  status_reason: string | null;
  container_ip: string | null;
  exit_code: number | null;
  restart_count: number;
  /** times its app exited (or could not be run) by its own doing, and the last such reason with its output (migration 031) */
  app_exits: number;
  last_exit: string | null;
  started_at: Date | null;
  stopped_at: Date | null;
  health_checked_at: Date | null;
  healthy_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

export function publicContainer(c: ContainerRow) {
  return {
    id: c.id, user_id: c.user_id, image_id: c.image_id, name: c.name, docker_id: c.docker_id,
    status: c.status, desired: c.desired, health: c.health, status_reason: c.status_reason,
    host_port: c.host_port, internal_port: c.internal_port, exit_code: c.exit_code, restart_count: c.restart_count,
    started_at: iso(c.started_at), stopped_at: iso(c.stopped_at), health_checked_at: iso(c.health_checked_at), healthy_at: iso(c.healthy_at),
    created_at: iso(c.created_at), updated_at: iso(c.updated_at),
  };
}

/**
 * Docker reference for an image: berth-u{user}-i{image}-c{cluster}:{tag}. The cluster id (one per
 * berth database) keeps two clusters sharing a Docker daemon (or two test suites) from tagging
 * over, and deleting, each other's images: image ids restart at 1 in every database.
 */
export const dockerRef = (clusterId: string, userId: number, imageId: number, tag: string) => `berth-u${userId}-i${imageId}-c${clusterId}:${tag}`;

/** An image of this user, or undefined (also for another user's image: callers answer 404). */
export async function getImage(q: Queryable, userId: number, id: number): Promise<ImageRow | undefined> {
  const { rows } = await q.query<ImageRow>('SELECT * FROM images WHERE id = $1 AND user_id = $2', [id, userId]);
  return rows[0];
}

export async function listImages(q: Queryable, userId: number): Promise<ImageRow[]> {
  const { rows } = await q.query<ImageRow>('SELECT * FROM images WHERE user_id = $1 ORDER BY id', [userId]);
  return rows;
}

export async function listContainers(q: Queryable, userId: number, imageIds?: number[]): Promise<ContainerRow[]> {
  const { rows } = imageIds
    ? await q.query<ContainerRow>('SELECT * FROM containers WHERE user_id = $1 AND image_id = ANY($2::bigint[]) ORDER BY id', [userId, imageIds])
    : await q.query<ContainerRow>('SELECT * FROM containers WHERE user_id = $1 ORDER BY id', [userId]);
  return rows;
}
