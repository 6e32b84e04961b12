import { lstat, mkdir, readFile, readdir, rename, rm } from 'node:fs/promises';
import { startSse } from '../http/sse.js';
import { streamLimits } from '../http/stream-limits.js';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';
import { isUniqueViolation, withTransaction } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import { ApiError, badRequest, conflict, notFound } from '../http/errors.js';
import { ArchiveError, extractArchive } from './archive/extract.js';
import { BuildQueue, buildDir, contextDir } from './build-queue.js';
import { imageFieldsSchema, noDefault, parseCpu, parseImageFields, parseMemory } from './fields.js';
import { checkAppDomain } from '../apps/domains.js';
import { appOwner, checkHold, checkTagHostsFree, claimRevision, holdHostname, inheritedFields, joinTraffic, type AppRow } from '../apps/repo.js';
import { checkTag } from '../apps/traffic.js';
import { normalizeHost } from '../../shared/hostname.js';
import { dockerRef, getImage, listContainers, listImages, publicContainer, publicImage, type ImageRow } from './repo.js';
import { FIELD_MAX_BYTES, receiveUpload } from './upload.js';
import { nextEnv } from './env.js';
import { autoscalingSchema, buildLogsSchema, containerListSchema, imageSchema, imageWithContainersSchema } from './schemas.js';
import { errorResponses, noContent, object } from '../http/responses.js';
import { checkInstanceSize, checkUploadQuota } from './quotas.js';
import { privateDir } from './private-dir.js';
import { checkDockerfilePolicy, MAX_DOCKERFILE_BYTES } from './dockerfile-policy.js';
import { DockerUnavailableError } from '../runtime/docker.js';
import { targetPerInstance } from '../autoscale/kpa.js';

// ids are bigint in Postgres but JS numbers here: past 2^53 they are not exact (and 1e20 is not a bigint literal)
const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } } } as const;
type IdReq = { Params: { id: number } };

const P = imageFieldsSchema.properties;
/** PATCH /api/images/:id: the upload's fields that change without a rebuild; null clears a limit. */
const imagePatchSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    min_instances: noDefault(P.min_instances),
    max_instances: P.max_instances,
    container_concurrency: noDefault(P.container_concurrency),
    target_utilization: noDefault(P.target_utilization),
    scale_down_delay_s: noDefault(P.scale_down_delay_s),
    request_timeout_s: noDefault(P.request_timeout_s),
    session_affinity: noDefault(P.session_affinity),
    upstream_pipeline: noDefault(P.upstream_pipeline),
    health_path: { ...P.health_path, type: ['string', 'null'] },
    cpu_limit: { ...P.cpu_limit, type: ['string', 'null'] },
    memory_limit: { ...P.memory_limit, type: ['string', 'null'] },
  },
} as const;
const NOT_NULLABLE = ['min_instances', 'max_instances', 'container_concurrency', 'target_utilization', 'scale_down_delay_s', 'request_timeout_s', 'session_affinity', 'upstream_pipeline'] as const;
interface ImagePatch {
  min_instances?: number;
  max_instances?: number;
  container_concurrency?: number;
  target_utilization?: number;
  scale_down_delay_s?: number;
  request_timeout_s?: number;
  session_affinity?: boolean;
  upstream_pipeline?: number;
  health_path?: string | null;
  cpu_limit?: string | null;
  memory_limit?: string | null;
}

declare module 'fastify' {
  interface FastifyInstance {
    builds: BuildQueue;
  }
}

/** Uploads one user may have in progress at once (each a file of up to --max-upload-bytes, then an extraction). */
const MAX_UPLOADS_PER_USER = 2;

/** Images: upload → extract → build queue; listing, logs (with live follow), deletion. */
export default async function imagesPlugin(app: FastifyInstance): Promise<void> {
  const cfg = app.config;
  // the platform's own names: no app takes one (config reservedHostnames, BERTH_PUBLIC_URL's host)
  // (the public URL read at each check: the info plugin registers after this one, and berth up sets it later)
  const checkReserved = (host: string) => {
    const url = app.publicInfo?.proxyUrl;
    if (cfg.reservedHostnames.includes(host) || (url && normalizeHost(new URL(url).hostname) === host)) throw conflict(`app_hostname "${host}" is one of this platform's own names (the proxy's address); choose another`, 'hostname_reserved');
  };
  await sweepLeftovers(app);
  for (const d of ['uploads', 'builds']) await privateDir(join(cfg.dataDir, d));
  await app.register(multipart, { limits: { fileSize: cfg.maxUploadBytes, files: 1, fields: 20, fieldSize: FIELD_MAX_BYTES, parts: 22 } });

  // Live `?follow=1` log streams: a hijacked response only ends with its build, so app.close()
  // would wait for it; they are ended (without an `end` event: clients reconnect) before closing.
  const followers = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const stop of [...followers]) stop();
    followers.clear();
  });

  const load = async (req: FastifyRequest<IdReq>): Promise<ImageRow> => {
    const img = await getImage(app.db, req.user!.id, req.params.id);
    if (!img) throw notFound('image');
    return img;
  };

  /** Uploads in progress per user (this control plane). */
  const uploading = new Map<number, number>();

  app.post('/api/images', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Upload source (multipart: fields + file = zip/tar/tar.gz with a Dockerfile) and build it: a new app or its next revision',
      description: 'Fields: name, tag, app_hostname, container_port, min_instances, max_instances, container_concurrency, target_utilization, scale_down_delay_s, request_timeout_s (300), cpu_limit, memory_limit, health_path, no_traffic, traffic_tag, env (JSON object: variables to set; the rest come from the previous revision), env_unset (JSON array of names to remove), env_clear (start from none), file. Answers 201 with status "building".',
      tags: ['images'],
      consumes: ['multipart/form-data'],
      response: { 201: imageSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const userId = req.user!.id;
    // before a byte is written to disk: a user at a quota is told now, not after 200 MB (the
    // transaction checks again), and one user's uploads in flight are few (each is a file of up
    // to --max-upload-bytes, then an extraction)
    await checkUploadQuota(app.db, userId, cfg.quotas);
    const inFlight = uploading.get(userId) ?? 0;
    if (inFlight >= MAX_UPLOADS_PER_USER) {
      throw new ApiError(429, 'too_many_uploads', `you have ${inFlight} uploads in progress, the most at once (${MAX_UPLOADS_PER_USER}); wait for one to finish`, { 'retry-after': '5' });
    }
    uploading.set(userId, inFlight + 1);
    try {
      return await receiveAndQueue(req, reply, userId);
    } finally {
      const n = (uploading.get(userId) ?? 1) - 1;
      if (n > 0) uploading.set(userId, n);
      else uploading.delete(userId);
    }
  });

  async function receiveAndQueue(req: FastifyRequest, reply: FastifyReply, userId: number) {
    const upload = await receiveUpload(req, join(cfg.dataDir, 'uploads'), cfg.maxUploadBytes);
    const staging = join(cfg.dataDir, 'builds', String(userId), `.staging-${randomUUID()}`);
    try {
      await privateDir(join(cfg.dataDir, 'builds', String(userId)));
      // a hostname this user already owns: the upload is the app's next revision, and what it
      // leaves out comes from the previous one
      const asked = normalizeHost(String(upload.fields.app_hostname ?? ''));
      const owner = await appOwner(app.db, asked);
      if (owner && owner.user_id !== userId) throw conflict(`app_hostname "${owner.app_hostname}" is already in use`, 'hostname_taken');
      // (a hostname held for the owner of an app deleted lately is refused before the archive is unpacked; claimRevision decides)
      if (!owner) await checkHold(app.db, asked, userId);
      const fields = parseImageFields(owner ? { ...inheritedFields(owner.previous), ...upload.fields } : upload.fields);
      if (!owner) {
        checkAppDomain(fields.app_hostname, cfg.appDomains);
        checkReserved(fields.app_hostname);
      }
      const given = (k: string) => upload.fields[k] !== undefined;
      checkInstanceSize(cfg.instanceMax, given('cpu_limit') ? fields.cpu_limit : null, given('memory_limit') ? fields.memory_limit_bytes : null);
      if (fields.traffic_tag !== null) checkTag(fields.traffic_tag, fields.app_hostname, 'field "traffic_tag"');
      const env = nextEnv(owner?.previous?.env ?? {}, fields.envChanges);
      if (!upload.file) throw badRequest('field "file" is required: a zip, tar or tar.gz archive with a Dockerfile at its root');
      await checkUploadQuota(app.db, userId, cfg.quotas);
      try {
        // a client gone while its upload was read (or waited for an extraction slot) gets no answer: no work for it
        if (req.raw.socket?.destroyed) throw badRequest('the client went away before its upload was extracted');
        await extractArchive(upload.file, join(staging, 'context'), { maxEntries: cfg.maxArchiveEntries, maxBytes: cfg.maxArchiveBytes });
      } catch (e) {
        if (e instanceof ArchiveError) throw new ApiError(400, 'invalid_archive', e.message);
        throw e;
      }
      const df = await lstat(join(staging, 'context', 'Dockerfile')).catch(() => undefined);
      if (!df?.isFile()) throw new ApiError(400, 'dockerfile_missing', 'the archive has no Dockerfile at its root (a regular file named exactly "Dockerfile")');
      // real ones are a few KiB; the policy reads it on the API's event loop (at most ~0.1 s here)
      if (df.size > MAX_DOCKERFILE_BYTES) throw new ApiError(400, 'dockerfile_refused', `the Dockerfile is larger than ${MAX_DOCKERFILE_BYTES / 1024} KiB`);
      checkDockerfilePolicy(await readFile(join(staging, 'context', 'Dockerfile'), 'utf8'), userId, cfg.registries);
      await upload.cleanup();

      const { rows: [{ id }] } = await app.db.query<{ id: number }>(`SELECT nextval('images_id_seq')::bigint AS id`);
      const final = buildDir(cfg.dataDir, userId, id);
      await mkdir(final, { recursive: true, mode: 0o700 });
      await rename(join(staging, 'context'), contextDir(cfg.dataDir, userId, id));
      let img: ImageRow;
      try {
        img = await withTransaction(app.db, async (c) => {
          await checkUploadQuota(c, userId, cfg.quotas, true);
          const claim = await claimRevision(c, fields.app_hostname, userId);
          if (!claim) throw conflict(`app_hostname "${fields.app_hostname}" is already in use`, 'hostname_taken');
          // the app this upload meant to extend was deleted meanwhile: it is a new app after all
          if (claim.revision === 1) {
            checkAppDomain(fields.app_hostname, cfg.appDomains);
            checkReserved(fields.app_hostname);
          }
          const { rows } = await c.query<ImageRow>(
            `INSERT INTO images (id, user_id, name, tag, app_hostname, revision, container_port, min_instances, max_instances,
               cpu_limit, memory_limit, memory_limit_bytes, status, docker_image, health_path,
               container_concurrency, target_utilization, scale_down_delay_s, env, request_timeout_s, build_runner, session_affinity, upstream_pipeline, build_heartbeat_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,'building',$13,$14,$15,$16,$17,$18::jsonb,$19,$20,$21,$22, now()) RETURNING *`,
            [id, userId, fields.name, fields.tag, fields.app_hostname, claim.revision, fields.container_port, fields.min_instances, fields.max_instances,
              fields.cpu_limit, fields.memory_limit, fields.memory_limit_bytes, dockerRef(app.platform.clusterId, userId, id, fields.tag), fields.health_path,
              fields.container_concurrency, fields.target_utilization, fields.scale_down_delay_s, JSON.stringify(env), fields.request_timeout_s,
              app.builds.runner, fields.session_affinity, fields.upstream_pipeline]);
          await recordEvent(c, { type: 'image.building', userId, imageId: id, appHostname: fields.app_hostname, payload: { name: fields.name, tag: fields.tag, docker_image: rows[0].docker_image, revision: claim.revision } });
          if (fields.traffic_tag !== null) await checkTagHostsFree(c, fields.app_hostname, [fields.traffic_tag]);
          rows[0].joins_traffic = await joinTraffic(c, claim, { imageId: id, userId, noTraffic: fields.no_traffic, tag: fields.traffic_tag });
          return rows[0];
        });
      } catch (e) {
        await rm(final, { recursive: true, force: true });
        if (isUniqueViolation(e, 'apps_pkey')) throw conflict(`app_hostname "${fields.app_hostname}" was just claimed by another upload; try again`, 'hostname_taken');
        throw e;
      }
      app.events.nudge();
      app.builds.enqueue(img.id);
      req.log.info({ imageId: img.id, app_hostname: img.app_hostname }, 'image uploaded; build queued');
      return reply.code(201).send(publicImage(img));
    } finally {
      await upload.cleanup();
      await rm(staging, { recursive: true, force: true });
    }
  }

  app.get('/api/images', { preHandler: app.authenticate, schema: { summary: 'List your images (revisions)', tags: ['images'], response: { 200: object({ images: { type: 'array', items: imageSchema } }), ...errorResponses } } }, async (req) => {
    return { images: (await listImages(app.db, req.user!.id)).map(publicImage) };
  });

  app.get('/api/images/with-containers', { preHandler: app.authenticate, schema: { summary: 'List your images, each with its containers', tags: ['images'], response: { 200: object({ images: { type: 'array', items: imageWithContainersSchema } }), ...errorResponses } } }, async (req) => {
    const images = await listImages(app.db, req.user!.id);
    const containers = await listContainers(app.db, req.user!.id, images.map((i) => i.id));
    return {
      images: images.map((i) => ({ ...publicImage(i), containers: containers.filter((c) => c.image_id === i.id).map(publicContainer) })),
    };
  });

  app.get<IdReq>('/api/images/:id', { preHandler: app.authenticate, schema: { summary: 'One image: settings and build status', tags: ['images'], params: idParams, response: { 200: imageSchema, ...errorResponses } } }, async (req) => {
    return publicImage(await load(req));
  });

  app.get<IdReq>('/api/images/:id/containers', { preHandler: app.authenticate, schema: { summary: "An image's containers", tags: ['images'], params: idParams, response: { 200: containerListSchema, ...errorResponses } } }, async (req) => {
    const img = await load(req);
    return { containers: (await listContainers(app.db, req.user!.id, [img.id])).map(publicContainer) };
  });

  app.get<IdReq & { Querystring: { follow?: string } }>('/api/images/:id/build-logs', {
    preHandler: app.authenticate,
    schema: { summary: 'The build log; follow=1 streams it live over SSE until the build ends', tags: ['images'], params: idParams, querystring: { type: 'object', additionalProperties: false, properties: { follow: { type: 'string', enum: ['0', '1', 'true', 'false', ''] } } },
      // JSON without follow; with follow the reply is hijacked (SSE: `event: log` {text}, then
      // `event: end` {status}) and never serialized: its content type is documented only
      response: {
        200: { content: { 'application/json': { schema: buildLogsSchema }, 'text/event-stream': { schema: { type: 'string', description: 'SSE: `log` events {text}, then one `end` event {status}' } } } },
        ...errorResponses,
      },
    },
  }, async (req, reply) => {
    const img = await load(req);
    const live = app.builds.liveLog(img.id);
    if (req.query.follow !== '1' && req.query.follow !== 'true' && req.query.follow !== '') {
      return { image_id: img.id, status: img.status, logs: live ? live.text() : img.build_logs, truncated: live ? live.truncated : img.build_logs_truncated };
    }
    return followLogs(app, req, reply, img, followers);
  });

  // Settings that change without a rebuild. Applied at once: the proxies get the new
  // container_concurrency with the next route table (pushed now), new containers get the new
  // limits and health path; `image.updated` records what changed.
  app.patch<IdReq & { Body: ImagePatch }>('/api/images/:id', {
    preHandler: app.authenticate,
    // type coercion would read `null` as 0 for these (min_instances null → scale to zero): refuse it
    preValidation: async (req) => {
      const body = req.body as Record<string, unknown> | null;
      for (const k of NOT_NULLABLE) if (body && typeof body === 'object' && k in body && body[k] === null) throw badRequest(`field "${k}" must be a number, not null`);
    },
    schema: { summary: 'Change the settings that need no rebuild (instances, concurrency, request timeout, limits, health path)', tags: ['images'], params: idParams, body: imagePatchSchema, response: { 200: imageSchema, ...errorResponses } },
  }, async (req) => {
    const b = req.body;
    let raisedMin = false;
    const img = await withTransaction(app.db, async (c) => {
      const { rows: [row] } = await c.query<ImageRow>('SELECT * FROM images WHERE id = $1 AND user_id = $2 FOR UPDATE', [req.params.id, req.user!.id]);
      if (!row) throw notFound('image');
      const mem = b.memory_limit === undefined ? undefined : b.memory_limit === null ? null : parseMemory(b.memory_limit);
      const next = {
        min_instances: (b.min_instances ?? row.min_instances) + 0,
        max_instances: (b.max_instances ?? row.max_instances) + 0,
        container_concurrency: (b.container_concurrency ?? row.container_concurrency) + 0,
        target_utilization: (b.target_utilization ?? row.target_utilization) + 0,
        scale_down_delay_s: (b.scale_down_delay_s ?? row.scale_down_delay_s) + 0,
        request_timeout_s: (b.request_timeout_s ?? row.request_timeout_s) + 0,
        session_affinity: b.session_affinity ?? row.session_affinity,
        upstream_pipeline: (b.upstream_pipeline ?? row.upstream_pipeline) + 0,
        health_path: b.health_path === undefined ? row.health_path : b.health_path,
        cpu_limit: b.cpu_limit === undefined ? row.cpu_limit : b.cpu_limit === null ? null : parseCpu(b.cpu_limit),
        memory_limit: mem === undefined ? row.memory_limit : mem?.text ?? null,
        memory_limit_bytes: mem === undefined ? row.memory_limit_bytes : mem?.bytes ?? null,
      };
      if (next.min_instances > next.max_instances) throw badRequest(`min_instances (${next.min_instances}) must not exceed max_instances (${next.max_instances})`);
      checkInstanceSize(app.config.instanceMax, b.cpu_limit === undefined ? null : next.cpu_limit, b.memory_limit === undefined ? null : next.memory_limit_bytes);
      const changed: Record<string, { from: unknown; to: unknown }> = {};
      for (const [k, v] of Object.entries(next)) {
        const was = (row as unknown as Record<string, unknown>)[k];
        if (String(was ?? null) !== String(v ?? null)) changed[k] = { from: was ?? null, to: v };
      }
      if (Object.keys(changed).length === 0) return row;
      raisedMin = next.min_instances > row.min_instances;
      const { rows: [updated] } = await c.query<ImageRow>(
        `UPDATE images SET min_instances = $2, max_instances = $3, container_concurrency = $4, target_utilization = $5,
           scale_down_delay_s = $6, health_path = $7, cpu_limit = $8, memory_limit = $9, memory_limit_bytes = $10,
           request_timeout_s = $11, session_affinity = $12, upstream_pipeline = $13, updated_at = now()
         WHERE id = $1 RETURNING *`,
        [row.id, next.min_instances, next.max_instances, next.container_concurrency, next.target_utilization,
          next.scale_down_delay_s, next.health_path, next.cpu_limit, next.memory_limit, next.memory_limit_bytes, next.request_timeout_s,
          next.session_affinity, next.upstream_pipeline]);
      await recordEvent(c, { type: 'image.updated', userId: row.user_id, imageId: row.id, appHostname: row.app_hostname, payload: { changed } });
      return updated;
    });
    app.events.nudge();
    app.platform.hub.schedule();
    // a raised floor is honoured now (not only at the first build): start or create up to it
    if (raisedMin && img.status === 'ready') void app.platform.activation.ensure(img.user_id, img.id, img.min_instances);
    return publicImage(img);
  });

  // What the autoscaler sees and decided for an app (every serving revision is autoscaled when the autoscaler is on).
  app.get<IdReq>('/api/images/:id/autoscaling', { preHandler: app.authenticate, schema: { summary: "The autoscaler's view of an image: desired, actual, observed concurrency, last decision", tags: ['images'], params: idParams, response: { 200: autoscalingSchema, ...errorResponses } } }, async (req) => {
    const img = await load(req);
    const live = app.platform.autoscaler.status(img.id);
    if (live) return { image_id: img.id, autoscaled: true, ...live };
    const { rows: [c] } = await app.db.query<{ actual: number; ready: number }>(
      `SELECT count(*) FILTER (WHERE desired = 'running')::int AS actual,
              count(*) FILTER (WHERE desired = 'running' AND status = 'running' AND health = 'healthy')::int AS ready
         FROM containers WHERE image_id = $1`, [img.id]);
    return {
      image_id: img.id, autoscaled: false,
      desired: c.actual, actual: c.actual, ready: c.ready, observed_concurrency: 0,
      target_per_instance: targetPerInstance({ minInstances: img.min_instances, maxInstances: img.max_instances, containerConcurrency: img.container_concurrency, targetUtilization: img.target_utilization, scaleDownDelayMs: 0 }),
      panic: false, last_decision: null,
    };
  });

  app.delete<IdReq>('/api/images/:id', { preHandler: app.authenticate, schema: { summary: 'Delete an image (409 while it has containers)', tags: ['images'], params: idParams, response: { ...noContent, ...errorResponses } } }, async (req, reply) => {
    // The row goes first, in one transaction with its event: the row lock makes the container
    // check and the delete atomic (creating a container locks the image row through its foreign
    // key). Docker and the files are cleaned up afterwards, best effort.
    const img = await withTransaction(app.db, async (c) => {
      // the app row first, then the image (the order DELETE /api/apps and uploads lock them in)
      const { rows: [peek] } = await c.query<{ app_hostname: string }>('SELECT app_hostname FROM images WHERE id = $1 AND user_id = $2', [req.params.id, req.user!.id]);
      if (!peek) throw notFound('image');
      await c.query('SELECT 1 FROM apps WHERE app_hostname = $1 FOR UPDATE', [peek.app_hostname]);
      const { rows } = await c.query<ImageRow>('SELECT * FROM images WHERE id = $1 AND user_id = $2 FOR UPDATE', [req.params.id, req.user!.id]);
      const row = rows[0];
      if (!row) throw notFound('image');
      const { rows: [{ n }] } = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM containers WHERE image_id = $1', [row.id]);
      if (n > 0) throw conflict(`image ${row.id} still has ${n} container(s); delete them first`, 'image_in_use');
      const { rows: [owner] } = await c.query<AppRow>('SELECT * FROM apps WHERE app_hostname = $1', [row.app_hostname]);
      if (owner?.traffic.some((e) => e.image_id === row.id)) {
        throw conflict(`revision ${row.revision} of ${row.app_hostname} (image ${row.id}) is named in the app's traffic; change it first (PUT /api/apps/${row.app_hostname}/traffic)`, 'revision_in_traffic');
      }
      await c.query('DELETE FROM images WHERE id = $1', [row.id]);
      await c.query('UPDATE apps SET pending_image_id = NULL WHERE app_hostname = $1 AND pending_image_id = $2', [row.app_hostname, row.id]);
      await recordEvent(c, { type: 'image.deleted', userId: row.user_id, imageId: row.id, appHostname: row.app_hostname, payload: { docker_image: row.docker_image, revision: row.revision } });
      // the app goes with its last revision
      const { rowCount: appGone } = await c.query('DELETE FROM apps WHERE app_hostname = $1 AND NOT EXISTS (SELECT 1 FROM images WHERE app_hostname = $1)', [row.app_hostname]);
      if (appGone) {
        await holdHostname(c, row.app_hostname, row.user_id, cfg.hostnameHoldDays, cfg.quotas.images);
        await recordEvent(c, { type: 'app.deleted', userId: row.user_id, appHostname: row.app_hostname, payload: { revisions: [row.revision] } });
      }
      return row;
    }).catch((e) => {
      if ((e as { code?: string }).code === '23503') throw conflict(`image ${req.params.id} still has containers; delete them first`, 'image_in_use');
      throw e;
    });
    app.events.nudge();
    app.platform?.hub.schedule();
    await discardImage(app, img, req.log);
    return reply.code(204).send();
  });
}

/**
 * After an image's row is gone: a running build finds it gone, stops and removes what it built;
 * the Docker image and the build directory are removed, best effort.
 */
export async function discardImage(app: FastifyInstance, img: ImageRow, log: FastifyBaseLogger): Promise<void> {
  await app.builds.cancel(img.id, 'image deleted');
  try {
    await app.runtime.removeImage(img.docker_image);
  } catch (e) {
    const msg = e instanceof DockerUnavailableError ? e.message : (e as Error).message;
    log.warn({ err: msg, docker_image: img.docker_image }, 'image deleted, but its Docker image could not be removed; remove it by hand');
  }
  await rm(buildDir(app.config.dataDir, img.user_id, img.id), { recursive: true, force: true })
    .catch((e) => log.warn({ err: e }, 'image deleted, but its build directory could not be removed'));
}

/**
 * At start, nothing is uploading or extracting: upload files and staging dirs left by a previous
 * process that died mid-request are garbage (run one control plane per data dir).
 */
async function sweepLeftovers(app: FastifyInstance): Promise<void> {
  const list = (dir: string) => readdir(dir, { withFileTypes: true }).catch(() => []);
  const gone: string[] = [];
  const uploads = join(app.config.dataDir, 'uploads');
  for (const e of await list(uploads)) if (e.name.endsWith('.upload')) gone.push(join(uploads, e.name));
  const builds = join(app.config.dataDir, 'builds');
  for (const user of await list(builds)) {
    if (!user.isDirectory()) continue;
    for (const e of await list(join(builds, user.name))) if (e.name.startsWith('.staging-')) gone.push(join(builds, user.name, e.name));
  }
  for (const p of gone) await rm(p, { recursive: true, force: true }).catch((e) => app.log.warn({ err: e, path: p }, 'could not remove a leftover upload'));
  if (gone.length) app.log.info({ count: gone.length }, 'removed uploads and staging dirs left by a previous run');
}

/** Output a build-log follower may leave unread before it is disconnected. */
const FOLLOW_BUFFER_MAX = 2 * 1024 * 1024;

/** SSE: the log so far, then live output until the build ends (`event: end` with the status). */
async function followLogs(app: FastifyInstance, req: FastifyRequest, reply: FastifyReply, img: ImageRow, followers: Set<() => void>): Promise<void> {
  // gone while the image was looked up: nothing to follow
  if (req.raw.socket?.destroyed) { reply.hijack(); return; }
  // a stream like a log follow: counted against the per-user and global caps (429 past them)
  const release = streamLimits(app).acquire(img.user_id, 'build log follow', req.ip);
  const res = startSse(req, reply);
  let unread = 0; // what the snapshot (the log so far) left in the buffer: not the follower's fault
  const send = (event: string, data: unknown, snapshot = false) => {
    if (res.destroyed) return;
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    if (snapshot) { unread = res.writableLength; return; }
    // a follower that does not read would buffer the whole build's output here: it is dropped
    // (reconnecting gives the log so far, at most its cap, then live output again)
    if (res.writableLength > unread + FOLLOW_BUFFER_MAX) {
      req.log.info({ imageId: img.id, buffered: res.writableLength }, 'build log follower too slow; disconnected');
      res.destroy();
    }
  };
  let closed = false;
  const cleanups: (() => void)[] = [release];
  const finish = (status: string) => {
    if (closed) return;
    closed = true;
    for (const c of cleanups) c();
    send('end', { status });
    res.end();
  };
  const shutdown = () => {
    if (closed) return;
    closed = true;
    for (const c of cleanups) c();
    if (!res.destroyed) res.end(': control plane shutting down\n\n');
  };
  followers.add(shutdown);
  cleanups.push(() => followers.delete(shutdown));
  const gone = () => { closed = true; for (const c of cleanups) c(); };
  req.raw.on('close', gone);
  res.on('close', gone);
  if (res.destroyed || req.raw.socket?.destroyed) return gone();
  const heartbeat = setInterval(() => { if (!res.destroyed) res.write(': keep-alive\n\n'); }, 15_000);
  cleanups.push(() => clearInterval(heartbeat));

  const live = app.builds.liveLog(img.id);
  if (live && live.ended === undefined) {
    // snapshot and subscription happen in the same tick: nothing is lost or repeated
    send('log', { text: live.text() }, true);
    cleanups.push(live.subscribe((t) => send('log', { text: t }), async (status) => {
      if (status === 'cancelled' || status === 'building') return finish(status);
      finish(status);
    }));
    return;
  }
  // Not building in this process: send what is stored; if another process is still building it, poll.
  let sent = img.build_logs;
  send('log', { text: sent }, true);
  if (img.status !== 'building') return finish(img.status);
  const poll = setInterval(async () => {
    try {
      const cur = await getImage(app.db, img.user_id, img.id);
      if (!cur) return finish('deleted');
      if (cur.build_logs.startsWith(sent)) { if (cur.build_logs.length > sent.length) send('log', { text: cur.build_logs.slice(sent.length) }); }
      else send('log', { text: cur.build_logs });
      sent = cur.build_logs;
      const l = app.builds.liveLog(img.id);
      if (cur.status !== 'building') finish(cur.status);
      else if (l && l.ended === undefined) {
        clearInterval(poll);
        cleanups.push(l.subscribe((t) => send('log', { text: t }), (s) => finish(s)));
      }
    } catch { /* transient db error: try again */ }
  }, 1000);
  cleanups.push(() => clearInterval(poll));
}
