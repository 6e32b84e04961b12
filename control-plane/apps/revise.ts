import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { withTransaction, type Queryable } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import { ApiError, conflict, notFound } from '../http/errors.js';
import { dockerApiError } from '../containers/service.js';
import { DockerUnavailableError } from '../runtime/docker.js';
import { nextEnv } from '../images/env.js';
import { parseImageFields, REVISION_SETTINGS, type RevisionSettings } from '../images/fields.js';
import { checkInstanceSize, checkUploadQuota } from '../images/quotas.js';
import { dockerRef, type ImageRow } from '../images/repo.js';
import { checkTag } from './traffic.js';
import { checkTagHostsFree, claimRevision, inheritedFields, joinTraffic, type AppRow } from './repo.js';

/** What `POST /api/apps/:host/revisions` may change: the upload's settings, without a file. */
export interface ReviseBody extends RevisionSettings {
  /** the revision whose image the new one runs (default: the newest ready one) */
  from_revision?: number;
  env?: Record<string, string>;
  env_unset?: string[];
  env_clear?: boolean;
}

/**
 * A new revision of an app from an image it already has, with changed settings or environment
 * and no build: Cloud Run's `gcloud run services update --update-env-vars …`. The new revision's
 * Docker reference is a second tag of the same image (deleting either revision removes only its
 * tag). It is ready at once and joins the traffic as an upload does (pending until it serves,
 * `no_traffic`, `traffic_tag`). Fields are checked by the upload's own rules.
 */
export async function reviseApp(app: FastifyInstance, userId: number, own: (q: Queryable) => Promise<AppRow>, body: ReviseBody, log: FastifyBaseLogger): Promise<ImageRow> {
  const cfg = app.config;
  const a = await own(app.db);
  const { rows: [source] } = await app.db.query<ImageRow>(
    `SELECT * FROM images WHERE app_hostname = $1 AND status = 'ready' ${body.from_revision !== undefined ? 'AND revision = $2' : ''}
      ORDER BY revision DESC LIMIT 1`, body.from_revision !== undefined ? [a.app_hostname, body.from_revision] : [a.app_hostname]);
  if (!source) {
    if (body.from_revision !== undefined) throw notFound(`ready revision ${body.from_revision} of ${a.app_hostname}`);
    throw conflict(`${a.app_hostname} has no built revision to start from; deploy one with a build first`, 'no_ready_revision');
  }
  // the upload's rules, on the source's settings with the changes over them (strings, as multipart)
  const raw: Record<string, string> = { ...inheritedFields(source), app_hostname: a.app_hostname };
  for (const k of REVISION_SETTINGS) if (body[k] !== undefined) raw[k] = String(body[k]);
  const fields = parseImageFields(raw);
  checkInstanceSize(cfg.instanceMax, body.cpu_limit === undefined ? null : fields.cpu_limit, body.memory_limit === undefined ? null : fields.memory_limit_bytes);
  if (fields.traffic_tag !== null) checkTag(fields.traffic_tag, fields.app_hostname, 'field "traffic_tag"');
  const env = nextEnv(source.env ?? {}, {
    ...(body.env !== undefined ? { env: JSON.stringify(body.env) } : {}),
    ...(body.env_unset !== undefined ? { env_unset: JSON.stringify(body.env_unset) } : {}),
    env_clear: body.env_clear === true,
  });
  await checkUploadQuota(app.db, userId, cfg.quotas);

  const { rows: [{ id }] } = await app.db.query<{ id: number }>(`SELECT nextval('images_id_seq')::bigint AS id`);
  const ref = dockerRef(app.platform.clusterId, userId, id, source.tag);
  // the tag first: a row must never name an image Docker does not have
  try {
    await app.runtime.tagImage(source.docker_image, ref);
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode === 404) {
      throw conflict(`the Docker image of revision ${source.revision} (${source.docker_image}) is gone from this machine; deploy with a build`, 'image_missing');
    }
    if (e instanceof DockerUnavailableError) throw dockerApiError(e);
    throw new ApiError(502, 'docker_error', `Docker could not tag the image: ${(e as Error).message}`);
  }
  try {
    const img = await withTransaction(app.db, async (c) => {
      await checkUploadQuota(c, userId, cfg.quotas, true);
      const claim = await claimRevision(c, a.app_hostname, userId);
      if (!claim) throw notFound('app');
      const { rows: [still] } = await c.query<{ id: number }>(`SELECT id FROM images WHERE id = $1 AND status = 'ready' FOR SHARE`, [source.id]);
      if (!still) throw conflict(`revision ${source.revision} of ${a.app_hostname} was deleted meanwhile; try again`, 'no_ready_revision');
      const { rows: [row] } = await c.query<ImageRow>(
        `INSERT INTO images (id, user_id, name, tag, app_hostname, revision, container_port, min_instances, max_instances,
           cpu_limit, memory_limit, memory_limit_bytes, status, docker_image, docker_image_id, health_path,
           container_concurrency, target_utilization, scale_down_delay_s, env, request_timeout_s,
           build_logs, session_affinity, upstream_pipeline, build_started_at, build_finished_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,'ready',$13,$14,$15,$16,$17,$18,$19::jsonb,$20,$21,$22,$23, now(), now()) RETURNING *`,
        [id, userId, source.name, source.tag, a.app_hostname, claim.revision, fields.container_port, fields.min_instances, fields.max_instances,
          fields.cpu_limit, fields.memory_limit, fields.memory_limit_bytes, ref, source.docker_image_id, fields.health_path,
          fields.container_concurrency, fields.target_utilization, fields.scale_down_delay_s, JSON.stringify(env), fields.request_timeout_s,
          `no build: the image of revision ${source.revision} (${source.docker_image_id ?? source.docker_image})\n`, fields.session_affinity, fields.upstream_pipeline]);
      await recordEvent(c, {
        type: 'image.ready', userId, imageId: id, appHostname: a.app_hostname,
        payload: { status: 'ready', docker_image: ref, docker_image_id: source.docker_image_id, revision: claim.revision, from_revision: source.revision, build: false },
      });
      if (fields.traffic_tag !== null) await checkTagHostsFree(c, a.app_hostname, [fields.traffic_tag]);
      row.joins_traffic = await joinTraffic(c, claim, { imageId: id, userId, noTraffic: fields.no_traffic, tag: fields.traffic_tag });
      return row;
    });
    app.events.nudge();
    app.platform.hub.schedule();
    app.platform.reconciler.kick();
    log.info({ imageId: img.id, app_hostname: img.app_hostname, revision: img.revision, from_revision: source.revision }, 'revision created from an existing image (no build)');
    return img;
  } catch (e) {
    await app.runtime.removeImage(ref).catch(() => {});
    throw e;
  }
}
