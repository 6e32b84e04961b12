/**
 * The response schema of an app (describe.ts `appView`): what GET /api/apps, GET/PATCH
 * /api/apps/:host and PUT …/traffic answer. Every property appView sends is declared (an
 * undeclared one would be dropped, test/control-plane/response-schemas.test.ts checks both ways).
 */
import { dateTime, idSchema, nullableDateTime, nullableInteger, nullableString, object } from '../http/responses.js';

/** One entry of the split as stored, with the revision it stands for now. */
const trafficEntrySchema = object({
  image_id: idSchema,
  latest: { type: 'boolean', description: 'stands for the newest routable revision' },
  percent: { type: 'integer', minimum: 0, maximum: 100 },
  tag: { type: 'string', description: 'the revision also answers at http://{tag}---{app_hostname}/' },
  revision: { ...nullableInteger, description: 'the revision the entry stands for now (null: none is ready)' },
}, ['image_id', 'latest', 'tag']);

const revisionSchema = object({
  image_id: idSchema,
  revision: { type: 'integer', minimum: 1 },
  status: { type: 'string', enum: ['building', 'ready', 'build_failed'] },
  instances: { type: 'integer', minimum: 0, description: 'instances meant to run' },
  ready_instances: { type: 'integer', minimum: 0, description: 'running and healthy' },
  proving: { type: 'boolean', description: 'it scales from zero and was deployed with traffic, or was deployed into a split set by hand that gives it no share: one instance is started to prove it can serve before it takes the traffic, or a split may name it (it then scales to zero when idle, or as soon as it is proven when it has no share)' },
  start_failure: { ...nullableString, description: 'set when the revision could not start (GET /api/images/:id says when): it takes no traffic and runs nothing' },
  start_blocked: { ...nullableString, description: 'why none, or not all, of its instances can be made now (the per-user container quota is full); one none of whose instances runs is given up on past the start deadline' },
  traffic_percent: { type: 'integer', minimum: 0, maximum: 100 },
  traffic_tag: nullableString,
  tag_url: { ...nullableString, description: 'the revision by its (first) tag, on the proxy\'s scheme and port as url' },
  tag_urls: { type: 'array', items: { type: 'string' } },
  serving: { type: 'boolean', description: 'has a share or a tag (or is about to take latest, or is being proven outside the split): it keeps instances' },
  served: { type: 'boolean', description: 'one of its instances was healthy once: a split by hand may give it any share' },
  created_at: dateTime,
});

export const appSchema = object({
  app_hostname: { type: 'string' },
  url: { type: 'string', description: 'the app on the proxy, by its hostname: the scheme and port of the proxy\'s public URL (`berth up`\'s proxy, BERTH_PUBLIC_URL), http://HOST/ when it is unknown' },
  path: { type: 'string', description: 'the same app through the proxy at /apps/{app_hostname}/' },
  latest_image_id: { ...nullableInteger, description: 'the revision `latest` stands for now' },
  revisions: { type: 'array', items: revisionSchema },
  pending_image_id: { ...nullableInteger, description: 'a deploy that takes the traffic once it serves' },
  traffic: { type: 'array', items: trafficEntrySchema },
  private: { type: 'boolean', description: 'only requests with one of its invoker tokens reach it' },
  deleting_at: { ...nullableDateTime, description: 'set while DELETE /api/apps/:host drains it' },
  created_at: dateTime,
  updated_at: dateTime,
}, [], { description: 'An app (a Cloud Run service): its revisions, their instances and the traffic split' });

export const appListSchema = object({ apps: { type: 'array', items: appSchema } });
