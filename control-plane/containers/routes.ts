import type { FastifyInstance } from 'fastify';
import { notFound } from '../http/errors.js';
import { publicContainer, type ContainerRow } from '../images/repo.js';
import { containerSchema } from '../images/schemas.js';
import { errorResponses, noContent, object } from '../http/responses.js';
import { getContainer, type ContainerService } from './service.js';

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } } } as const;
type IdReq = { Params: { id: number } };

/** `{ containers, count }` */
const containersSchema = object({ containers: { type: 'array', items: containerSchema }, count: { type: 'integer' } });
const one = { 200: containerSchema, ...errorResponses } as const;

/**
 * Containers API: `POST /api/containers/:imageId {count}` → 201 list; `GET /api/containers`,
 * `GET /api/containers/:id`, `POST /api/containers/:id/start|stop`, `DELETE /api/containers/:id`.
 * Another user's container answers 404.
 */
export default async function containerRoutes(app: FastifyInstance, opts: { service: ContainerService }): Promise<void> {
  const svc = opts.service;

  app.post<{ Params: { imageId: number }; Body: { count?: number } | undefined }>('/api/containers/:imageId', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Start more instances of an image (409 past max_instances)',
      tags: ['containers'],
      params: { type: 'object', required: ['imageId'], properties: { imageId: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } } },
      body: { type: ['object', 'null'], additionalProperties: false, properties: { count: { type: 'integer', minimum: 1, maximum: 100, default: 1 } } },
      response: { 201: containersSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const rows = await svc.create(req.user!.id, req.params.imageId, req.body?.count ?? 1);
    return reply.code(201).send({ containers: rows.map(publicContainer), count: rows.length });
  });

  app.get<{ Querystring: { image_id?: number } }>('/api/containers', {
    preHandler: app.authenticate,
    schema: { summary: 'List your containers (optionally of one image)', tags: ['containers'], querystring: { type: 'object', additionalProperties: false, properties: { image_id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } } }, response: { 200: containersSchema, ...errorResponses } },
  }, async (req) => {
    const { rows } = await app.db.query<ContainerRow>(
      'SELECT * FROM containers WHERE user_id = $1 AND ($2::bigint IS NULL OR image_id = $2) ORDER BY id', [req.user!.id, req.query.image_id ?? null]);
    return { containers: rows.map(publicContainer), count: rows.length };
  });

  app.get<IdReq>('/api/containers/:id', { preHandler: app.authenticate, schema: { summary: 'One container: status, health, ports', tags: ['containers'], params: idParams, response: one } }, async (req) => {
    const c = await getContainer(app.db, req.user!.id, req.params.id);
    if (!c) throw notFound('container');
    return publicContainer(c);
  });

  app.post<IdReq>('/api/containers/:id/stop', { preHandler: app.authenticate, schema: { summary: 'Stop a container gracefully (it stays stopped)', tags: ['containers'], params: idParams, response: one } }, async (req) => {
    return publicContainer(await svc.stop(req.user!.id, req.params.id));
  });

  app.post<IdReq>('/api/containers/:id/start', { preHandler: app.authenticate, schema: { summary: 'Start a stopped container', tags: ['containers'], params: idParams, response: one } }, async (req) => {
    return publicContainer(await svc.start(req.user!.id, req.params.id));
  });

  app.delete<IdReq>('/api/containers/:id', { preHandler: app.authenticate, schema: { summary: 'Stop and remove a container', tags: ['containers'], params: idParams, response: { ...noContent, ...errorResponses } } }, async (req, reply) => {
    await svc.remove(req.user!.id, req.params.id);
    return reply.code(204).send();
  });
}
