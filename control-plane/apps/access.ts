import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { withTransaction, type Queryable } from '../db/pool.js';
import { recordEvent } from '../events/outbox.js';
import { conflict, notFound } from '../http/errors.js';
import { dateTime, errorResponses, idSchema, noContent, object } from '../http/responses.js';
import { hostParams } from '../http/schemas.js';
import { describeApp } from './describe.js';
import type { AppRow } from './repo.js';
import { appSchema } from './schemas.js';

/**
 * Who may call an app (Cloud Run's `--[no-]allow-unauthenticated` and its invoker role). A public
 * app (the default) answers anyone. A private one answers only requests carrying one of its
 * invoker tokens — `X-Berth-Authorization: Bearer T`, or `Authorization: Bearer T` — which the
 * proxies check (RouteSpec.auth) before anything reaches the app; the rest get 401. Tokens are
 * made per app, shown once, stored as their SHA-256, and revoked one by one; the proxies have the
 * change within a route push. An invoker token does nothing else: it is not an API token.
 */

/** Invoker tokens one app may have. */
export const MAX_INVOKERS = 100;
const TOKEN_PREFIX = 'bi_';

export const tokenDigest = (token: string) => createHash('sha256').update(token).digest('hex');

type Own = (q: Queryable, userId: number, rawHost: string, lock?: boolean) => Promise<AppRow>;
type HostReq = { Params: { host: string } };

const invokerSchema = object({ id: idSchema, name: { type: 'string' }, created_at: dateTime });

export function accessRoutes(app: FastifyInstance, own: Own): void {
  const changed = () => {
    app.events.nudge();
    app.platform.hub.schedule();
  };

  app.patch<HostReq & { Body: { private: boolean } }>('/api/apps/:host', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Make an app private (only requests with one of its invoker tokens reach it) or public again',
      params: hostParams,
      body: { type: 'object', required: ['private'], additionalProperties: false, properties: { private: { type: 'boolean' } } },
      response: { 200: appSchema, ...errorResponses },
    },
  }, async (req) => {
    const uid = req.user!.id;
    const a = await withTransaction(app.db, async (c) => {
      const row = await own(c, uid, req.params.host, true);
      if (row.private === req.body.private) return row;
      const { rows: [updated] } = await c.query<AppRow>('UPDATE apps SET private = $2, updated_at = now() WHERE app_hostname = $1 RETURNING *', [row.app_hostname, req.body.private]);
      await recordEvent(c, { type: 'app.access_changed', userId: uid, appHostname: row.app_hostname, payload: { private: req.body.private } });
      return updated;
    });
    changed();
    return describeApp(app.db, a, app.publicInfo.proxyUrl);
  });

  app.get<HostReq>('/api/apps/:host/invokers', {
    preHandler: app.authenticate,
    schema: { summary: "An app's invoker tokens (names and ids; the tokens are shown only when made)", params: hostParams, response: { 200: object({ invokers: { type: 'array', items: invokerSchema } }), ...errorResponses } },
  }, async (req) => {
    const a = await own(app.db, req.user!.id, req.params.host);
    const { rows } = await app.db.query<{ id: string; name: string; created_at: Date }>(
      'SELECT id, name, created_at FROM app_invokers WHERE app_hostname = $1 ORDER BY id', [a.app_hostname]);
    return { invokers: rows.map((r) => ({ id: Number(r.id), name: r.name, created_at: r.created_at.toISOString() })) };
  });

  app.post<HostReq & { Body: { name: string } }>('/api/apps/:host/invokers', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Make an invoker token for a private app (shown once: keep it)',
      params: hostParams,
      body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: { type: 'string', minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9 ._-]*$' } } },
      response: { 201: object({ id: idSchema, name: { type: 'string' }, token: { type: 'string' }, created_at: dateTime }), ...errorResponses },
    },
  }, async (req, reply) => {
    const uid = req.user!.id;
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const row = await withTransaction(app.db, async (c) => {
      const a = await own(c, uid, req.params.host, true);
      const { rows: [{ n }] } = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM app_invokers WHERE app_hostname = $1', [a.app_hostname]);
      if (n >= MAX_INVOKERS) throw conflict(`${a.app_hostname} has ${n} invoker tokens, the most allowed; delete one first`, 'invoker_limit');
      const { rows: [r] } = await c.query<{ id: string; created_at: Date }>(
        'INSERT INTO app_invokers (app_hostname, name, token_sha256) VALUES ($1, $2, $3) RETURNING id, created_at', [a.app_hostname, req.body.name, tokenDigest(token)]);
      await recordEvent(c, { type: 'app.invoker_created', userId: uid, appHostname: a.app_hostname, payload: { id: Number(r.id), name: req.body.name } });
      return r;
    });
    changed();
    return reply.code(201).send({ id: Number(row.id), name: req.body.name, token, created_at: row.created_at.toISOString() });
  });

  app.delete<{ Params: { host: string; id: number } }>('/api/apps/:host/invokers/:id', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Revoke an invoker token (the proxies refuse it within a route push)',
      params: { type: 'object', required: ['host', 'id'], properties: { ...hostParams.properties, id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } } },
      response: { ...noContent, ...errorResponses },
    },
  }, async (req, reply) => {
    const uid = req.user!.id;
    await withTransaction(app.db, async (c) => {
      const a = await own(c, uid, req.params.host, true);
      const { rows: [r] } = await c.query<{ name: string }>('DELETE FROM app_invokers WHERE id = $1 AND app_hostname = $2 RETURNING name', [req.params.id, a.app_hostname]);
      if (!r) throw notFound('invoker');
      await recordEvent(c, { type: 'app.invoker_deleted', userId: uid, appHostname: a.app_hostname, payload: { id: req.params.id, name: r.name } });
    });
    changed();
    return reply.code(204).send();
  });
}
