import type { Queryable } from '../db/pool.js';
import { provingAsideSql, provingSql, routableSql, startFailedSql, type AppRow } from './repo.js';
import { resolveTraffic, tagHost, type RevisionState } from './traffic.js';
import { hostUrl } from '../../shared/client/urls.js';

/** One revision with what the app's description needs: its state and its instance counts. */
interface RevisionSummary extends RevisionState {
  app_hostname: string;
  instances: number;
  ready_instances: number;
  start_failure: string | null;
  start_blocked: string | null;
  proving: boolean;
  served: boolean;
  created_at: Date;
}

/**
 * The revisions of every app in `hosts`, ordered by app and revision, each with its instance
 * counts: one query whatever the number of apps (the counts come from a lateral subquery on
 * containers' image_id index; the images' build logs are not read).
 */
async function revisionSummaries(q: Queryable, hosts: string[]): Promise<Map<string, RevisionSummary[]>> {
  const out = new Map<string, RevisionSummary[]>(hosts.map((h) => [h, []]));
  if (hosts.length === 0) return out;
  const { rows } = await q.query<RevisionSummary>(
    `SELECT i.id, i.app_hostname, i.revision, i.status, ${routableSql('i')} AS routable, ${startFailedSql('i')} AS failed,
            i.start_failure, i.start_blocked, ${provingSql('i')} AS proving, ${provingAsideSql('i')} AS aside, i.routable_at IS NOT NULL AS served, i.created_at,
            c.instances, c.ready_instances
       FROM images i
       CROSS JOIN LATERAL (
         SELECT count(*) FILTER (WHERE ct.desired = 'running')::int AS instances,
                count(*) FILTER (WHERE ct.desired = 'running' AND ct.status = 'running' AND ct.health = 'healthy')::int AS ready_instances
           FROM containers ct WHERE ct.image_id = i.id) c
      WHERE i.app_hostname = ANY($1::text[])
      ORDER BY i.app_hostname, i.revision`, [hosts]);
  for (const r of rows) out.get(r.app_hostname)?.push(r);
  return out;
}

/** The API shape of an app from its row and its revisions. */
function appView(a: AppRow, revisions: RevisionSummary[], proxyUrl: string | null) {
  const r = resolveTraffic(a.traffic, revisions, a.pending_image_id);
  const traffic = r.promoted ?? a.traffic;
  // an app being deleted serves nothing (its split is shown as stored)
  const deleting = a.deleting_at !== null;
  const host = a.app_hostname;
  const revisionOf = new Map(revisions.map((i) => [i.id, i.revision]));
  return {
    app_hostname: host,
    url: hostUrl(host, proxyUrl),
    path: `/apps/${host}/`,
    latest_image_id: r.latest,
    revisions: revisions.map((i) => {
      const tags = r.tags.get(i.id) ?? [];
      return {
        image_id: i.id,
        revision: i.revision,
        status: i.status,
        instances: i.instances,
        ready_instances: i.ready_instances,
        /** why it could not start (it takes no traffic; apps/start-failure.ts), else null */
        start_failure: i.failed ? i.start_failure ?? 'could not start' : null,
        /** why none, or not all, of its instances can be made now (the container quota is full) */
        start_blocked: i.failed || deleting ? null : i.start_blocked,
        /** it scales from zero and runs one instance to prove it can serve before it takes the traffic (not once superseded) */
        proving: i.proving && !deleting && r.serving.has(i.id),
        traffic_percent: deleting ? 0 : r.percent.get(i.id) ?? 0,
        traffic_tag: tags[0] ?? null,
        tag_url: tags[0] ? hostUrl(tagHost(tags[0], host), proxyUrl) : null,
        tag_urls: tags.map((t) => hostUrl(tagHost(t, host), proxyUrl)),
        serving: !deleting && r.serving.has(i.id),
        served: i.served,
        created_at: new Date(i.created_at).toISOString(),
      };
    }),
    /** a revision deployed with traffic that takes it once it serves */
    pending_image_id: r.promoted ? null : a.pending_image_id,
    traffic: traffic.map((e) => {
      const id = e.latest ? r.latest : e.image_id ?? null;
      return { ...e, revision: id === null ? null : revisionOf.get(id) ?? null };
    }),
    /** only requests with one of its invoker tokens reach it (apps/access.ts) */
    private: a.private === true,
    /** set while DELETE /api/apps/:host drains its instances (apps/delete.ts) */
    deleting_at: deleting ? new Date(a.deleting_at!).toISOString() : null,
    created_at: new Date(a.created_at).toISOString(),
    updated_at: new Date(a.updated_at).toISOString(),
  };
}

export type AppView = ReturnType<typeof appView>;

/**
 * The API shape of apps (in the order given): their revisions with their share, tags and instance
 * counts, and the split as stored. One query for any number of apps (not one or more per app).
 */
export async function describeApps(q: Queryable, apps: AppRow[], proxyUrl: string | null): Promise<AppView[]> {
  const revisions = await revisionSummaries(q, apps.map((a) => a.app_hostname));
  return apps.map((a) => appView(a, revisions.get(a.app_hostname) ?? [], proxyUrl));
}

/** One app's API shape (one query). */
export async function describeApp(q: Queryable, a: AppRow, proxyUrl: string | null): Promise<AppView> {
  return (await describeApps(q, [a], proxyUrl))[0];
}
