import { TAG_MAX_LENGTH } from '../../shared/tag.js';
import { hostParams } from '../http/schemas.js';
import type { FastifyInstance } from 'fastify';
import { normalizeHost } from '../../shared/hostname.js';
import { withTransaction, type Queryable } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import { notFound } from '../http/errors.js';
import { accessRoutes } from './access.js';
import { deleteApp } from './delete.js';
import { reviseApp, type ReviseBody } from './revise.js';
import { revisionSettingsSchema } from '../images/fields.js';
import { ENV_LIMITS } from '../../shared/env-vars.js';
import { publicImage } from '../images/repo.js';
import { imageSchema } from '../images/schemas.js';
import { errorResponses, noContent } from '../http/responses.js';
import { appListSchema, appSchema } from './schemas.js';
import { describeApp, describeApps } from './describe.js';
import { checkTagHostsFree, revisionStates, setTraffic, type AppRow } from './repo.js';
import { checkTraffic, resolveTraffic, type TrafficEntry } from './traffic.js';

type HostReq = { Params: { host: string } };

const trafficBody = {
  type: 'object', required: ['traffic'], additionalProperties: false,
  properties: {
    traffic: {
      type: 'array', minItems: 1, maxItems: 100,
      items: {
        type: 'object', required: ['percent'], additionalProperties: false,
        properties: {
          image_id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
          latest: { type: 'boolean' },
          percent: { type: 'integer', minimum: 0, maximum: 100 },
          tag: { type: 'string', minLength: 1, maxLength: TAG_MAX_LENGTH },
        },
      },
    },
  },
} as const;

/**
 * Apps and their revisions (Cloud Run's services): list, traffic split (PUT, atomic, with an
 * `app.traffic_changed` event), deletion of every revision. A hostname that is another user's is
 * a 404, as one that does not exist.
 */
export default async function appsPlugin(app: FastifyInstance): Promise<void> {
  const own = async (q: Queryable, userId: number, rawHost: string, lock = false): Promise<AppRow> => {
    const host = normalizeHost(rawHost);
    const { rows: [a] } = await q.query<AppRow>(`SELECT * FROM apps WHERE app_hostname = $1 AND user_id = $2${lock ? ' FOR UPDATE' : ''}`, [host, userId]);
    if (!a) throw notFound('app');
    return a;
  };

  app.get('/api/apps', { preHandler: app.authenticate, schema: { summary: 'List your apps with their revisions and traffic split', response: { 200: appListSchema, ...errorResponses } } }, async (req) => {
    // two queries whatever the number of apps: the rows, then every revision of them (describeApps)
    const { rows } = await app.db.query<AppRow>('SELECT * FROM apps WHERE user_id = $1 ORDER BY app_hostname', [req.user!.id]);
    return { apps: await describeApps(app.db, rows, app.publicInfo.proxyUrl) };
  });

  app.get<HostReq>('/api/apps/:host', { preHandler: app.authenticate, schema: { summary: 'One app: its revisions, instances and traffic split', params: hostParams, response: { 200: appSchema, ...errorResponses } } }, async (req) => {
    return describeApp(app.db, await own(app.db, req.user!.id, req.params.host), app.publicInfo.proxyUrl);
  });

  app.put<HostReq & { Body: { traffic: TrafficEntry[] } }>('/api/apps/:host/traffic', {
    preHandler: app.authenticate,
    schema: { summary: 'Split the app\'s traffic between its revisions (percents summing to 100; tags)', params: hostParams, body: trafficBody, response: { 200: appSchema, ...errorResponses } },
  }, async (req) => {
    const a = await withTransaction(app.db, async (c) => {
      const a = await own(c, req.user!.id, req.params.host, true);
      const revisions = await revisionStates(c, a.app_hostname);
      // (a revision that never served keeps what share it has, no more)
      const next = checkTraffic(req.body.traffic, a.app_hostname, revisions, resolveTraffic(a.traffic, revisions, a.pending_image_id).percent);
      await checkTagHostsFree(c, a.app_hostname, next.flatMap((e) => (e.tag ? [e.tag] : [])));
      const changed = await setTraffic(c, a, next, 'api');
      // an explicit split overrides a deploy that was waiting to take the traffic; when the split
      // itself is unchanged, the cancelled deploy still leaves an event behind
      if (a.pending_image_id !== null) {
        await c.query('UPDATE apps SET pending_image_id = NULL WHERE app_hostname = $1', [a.app_hostname]);
        if (!changed) {
          await recordEvent(c, {
            type: 'app.traffic_changed', userId: a.user_id, imageId: a.pending_image_id, appHostname: a.app_hostname,
            payload: { reason: 'api', from: a.traffic, to: next, pending_cancelled: a.pending_image_id },
          });
        }
      }
      return { ...a, traffic: next, pending_image_id: null };
    });
    app.events.nudge();
    // proxies get the split with the next table; revisions that gained traffic get their
    // instances and those left without are drained and removed by the reconcile loop
    app.platform.hub.schedule();
    app.platform.reconciler.kick();
    return describeApp(app.db, a, app.publicInfo.proxyUrl);
  });

  app.post<HostReq & { Body: ReviseBody }>('/api/apps/:host/revisions', {
    preHandler: app.authenticate,
    schema: {
      summary: 'A new revision from an image the app already has, with changed settings or environment: no upload, no build',
      params: hostParams,
      body: {
        type: 'object', additionalProperties: false,
        properties: {
          from_revision: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
          env: { type: 'object', maxProperties: ENV_LIMITS.vars, additionalProperties: { type: 'string' } },
          env_unset: { type: 'array', maxItems: ENV_LIMITS.vars, items: { type: 'string', maxLength: ENV_LIMITS.nameLength } },
          env_clear: { type: 'boolean' },
          // the upload's own rules for each setting (images/fields.ts)
          ...revisionSettingsSchema,
        },
      },
      response: { 201: imageSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const userId = req.user!.id;
    const img = await reviseApp(app, userId, (q) => own(q, userId, req.params.host), req.body ?? {}, req.log);
    return reply.code(201).send(publicImage(img));
  });

  accessRoutes(app, own);

  app.delete<HostReq>('/api/apps/:host', {
    preHandler: app.authenticate,
    schema: { summary: 'Delete an app: drain and remove its instances, then every revision (503 app_delete_incomplete: repeat it)', params: hostParams, response: { ...noContent, ...errorResponses } },
  }, async (req, reply) => {
    await deleteApp(app, req.user!.id, (q, lock) => own(q, req.user!.id, req.params.host, lock), req.log);
    return reply.code(204).send();
  });
}
