import { EXIT, type BerthClient } from '../client.js';
import { printable } from '../style.js';
import { appHostArg, defineClientCommand } from '../command.js';
import { printJson, table } from '../output.js';

/** The shapes of GET /api/apps (revisions and traffic). */
export interface AppRevision {
  image_id: number; revision: number; status: string; instances: number; ready_instances?: number;
  traffic_percent: number; traffic_tag: string | null; tag_url: string | null; serving?: boolean; created_at?: string;
  /** set when the control plane gave the revision up (it could not start) */
  start_failure?: string | null;
  /** one instance is being started to prove it can serve before it takes the traffic */
  proving?: boolean;
  /** why none of its instances can be made now (the container quota is full) */
  start_blocked?: string | null;
}

/**
 * A revision's status as shown: `could not start` once the control plane gave it up, `quota full`
 * while none of its instances can be made (one only some of whose can serves with them: a note says so), `starting` while it is being proven or is the deploy
 * waiting to take the traffic once an instance is healthy (Cloud Run's revision "deploying"), once
 * built (`building` before).
 */
const statusOf = (r: AppRevision, a: App) =>
  (r.start_failure ? 'could not start' : r.start_blocked && r.instances === 0 ? 'quota full' : r.status === 'ready' && (r.proving || a.pending_image_id === r.image_id) ? 'starting' : r.status);
export interface App {
  app_hostname: string; url: string; path?: string; latest_image_id?: number | null;
  /** set while the app is being deleted (it serves nothing) */
  deleting_at?: string | null;
  /** only callers with an invoker token reach it (berth access) */
  private?: boolean;
  /** a revision deployed with traffic that takes it once an instance of it is healthy */
  pending_image_id?: number | null;
  revisions: AppRevision[];
  traffic: { image_id?: number; latest?: boolean; percent: number; tag?: string; revision?: number | null }[];
}

/** `berth apps`: one row per revision that serves, is tagged, or is the newest; `--all` for every revision. */
export const run = defineClientCommand({
  usage: 'berth apps [HOST] [--all] [--json]',
  description: `List your apps: hostname, revision, status, instances (ready/running) and traffic share.
Revisions that neither serve nor carry a tag are left out unless --all.
With HOST: every revision of that app with its settings (instances, concurrency, request timeout,
environment variable names; values are never shown).`,
  positional: { min: 0, max: 1, names: 'HOST' },
  options: [{ name: 'all', boolean: true, help: 'every revision, also those without traffic' }],
  async run({ opts, args, json, client, stdout }) {
    if (args[0] !== undefined) return describeOne(client, args[0], json, stdout);
    const { apps } = await client.get<{ apps: App[] }>('/api/apps');
    if (json) { printJson({ apps }); return EXIT.ok; }
    if (!apps.length) { stdout.write('No apps yet. Deploy one: berth deploy ./app --host hello.localhost\n'); return EXIT.ok; }
    stdout.write(appsTable(apps, opts.all === 'true'));
    return EXIT.ok;
  },
});

/** The settings of a revision, as GET /api/images answers them. */
interface RevisionSettings {
  id: number; revision: number; app_hostname: string; min_instances: number; max_instances: number; container_concurrency: number;
  request_timeout_s?: number; session_affinity?: boolean; upstream_pipeline?: number; env_names?: string[]; cpu_limit: number | null; memory_limit: string | null; created_at: string;
}

async function describeOne(client: BerthClient, rawHost: string, json: boolean, out: NodeJS.WriteStream): Promise<number> {
  const app = await client.get<App>(`/api/apps/${encodeURIComponent(appHostArg(rawHost))}`);
  const images = (await client.get<{ images: RevisionSettings[] }>('/api/images')).images.filter((i) => i.app_hostname === app.app_hostname);
  const byId = new Map(images.map((i) => [i.id, i]));
  if (json) {
    printJson({ app, revisions: app.revisions.map((r) => ({ ...r, settings: byId.get(r.image_id) ?? null })) });
    return EXIT.ok;
  }
  const rows = [...app.revisions].sort((x, y) => y.revision - x.revision).map((r) => ({ r, s: byId.get(r.image_id) }));
  out.write(`${printable(app.app_hostname)}  ${printable(app.url)}${app.private ? '  (private: invoker tokens only)' : ''}${app.deleting_at ? `  (being deleted since ${printable(app.deleting_at)}: serves nothing)` : ''}\n`);
  out.write(table(rows, [
    { header: 'revision', value: (x) => `${x.r.revision} (image ${x.r.image_id})` },
    { header: 'status', value: (x) => statusOf(x.r, app) },
    { header: 'instances', value: (x) => `${x.r.ready_instances ?? x.r.instances}/${x.r.instances}${x.s ? ` (${x.s.min_instances}–${x.s.max_instances})` : ''}` },
    { header: 'concurrency', value: (x) => (x.s ? (x.s.container_concurrency === 0 ? 'no limit' : x.s.container_concurrency) : null) },
    { header: 'timeout', value: (x) => (x.s?.request_timeout_s !== undefined ? `${x.s.request_timeout_s}s` : null) },
    { header: 'affinity', value: (x) => (x.s?.session_affinity === undefined ? null : x.s.session_affinity ? 'session' : 'none') },
    { header: 'pipeline', value: (x) => (x.s?.upstream_pipeline === undefined ? null : x.s.upstream_pipeline > 1 ? `${x.s.upstream_pipeline} deep` : 'off') },
    { header: 'limits', value: (x) => (x.s && (x.s.cpu_limit !== null || x.s.memory_limit !== null) ? [x.s.cpu_limit !== null ? `${x.s.cpu_limit} cpu` : '', x.s.memory_limit ?? ''].filter(Boolean).join(', ') : null) },
    { header: 'traffic', value: (x) => `${x.r.traffic_percent}%${x.r.traffic_tag ? `  tag ${x.r.traffic_tag}` : ''}` },
    { header: 'env', value: (x) => (x.s?.env_names?.length ? x.s.env_names.join(', ') : null) },
  ]));
  for (const { r } of rows) {
    if (r.start_failure) out.write(`revision ${r.revision} could not start: ${printable(r.start_failure)}\n`);
    else if (r.start_blocked) out.write(`revision ${r.revision} ${r.instances > 0 ? 'runs fewer instances than it asks' : 'cannot start yet'}: ${printable(r.start_blocked)}\n`);
  }
  return EXIT.ok;
}

export function appsTable(apps: App[], all: boolean): string {
  const rows: { host: string; r: AppRevision; a: App }[] = [];
  for (const a of apps) {
    const newest = Math.max(...a.revisions.map((r) => r.revision));
    let first = true;
    for (const r of [...a.revisions].sort((x, y) => y.revision - x.revision)) {
      if (!all && r.traffic_percent === 0 && !r.traffic_tag && r.revision !== newest) continue;
      rows.push({ host: first ? `${a.app_hostname}${a.deleting_at ? ' (deleting)' : ''}` : '', r, a });
      first = false;
    }
  }
  return table(rows, [
    { header: 'host', value: (x) => x.host },
    { header: 'revision', value: (x) => `${x.r.revision} (image ${x.r.image_id})` },
    { header: 'status', value: (x) => statusOf(x.r, x.a) },
    { header: 'instances', value: (x) => (x.r.ready_instances !== undefined ? `${x.r.ready_instances}/${x.r.instances}` : x.r.instances) },
    { header: 'traffic', value: (x) => `${x.r.traffic_percent}%${x.r.traffic_tag ? `  tag ${x.r.traffic_tag}` : ''}` },
  ]);
}
