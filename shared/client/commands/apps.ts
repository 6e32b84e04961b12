import { EXIT } from '../client.js';
import { defineClientCommand } from '../command.js';
import { printJson, table } from '../output.js';

/** The shapes of GET /api/apps (revisions and traffic). */
export interface AppRevision {
  image_id: number; revision: number; status: string; instances: number; ready_instances?: number;
  traffic_percent: number; traffic_tag: string | null; tag_url: string | null; serving?: boolean; created_at?: string;
}
export interface App {
  app_hostname: string; url: string; path?: string; latest_image_id?: number | null;
  revisions: AppRevision[];
  traffic: { image_id?: number; latest?: boolean; percent: number; tag?: string; revision?: number | null }[];
}

/** `berth apps`: one row per revision that serves, is tagged, or is the newest; `--all` for every revision. */
export const run = defineClientCommand({
  usage: 'berth apps [--all] [--json]',
  description: `List your apps: hostname, revision, status, instances (ready/running) and traffic share.
Revisions that neither serve nor carry a tag are left out unless --all.`,
  options: [{ name: 'all', boolean: true, help: 'every revision, also those without traffic' }],
  async run({ opts, json, client, stdout }) {
    const { apps } = await client.get<{ apps: App[] }>('/api/apps');
    if (json) { printJson({ apps }); return EXIT.ok; }
    if (!apps.length) { stdout.write('No apps yet. Deploy one: berth deploy ./app --host hello.localhost\n'); return EXIT.ok; }
    stdout.write(appsTable(apps, opts.all === 'true'));
    return EXIT.ok;
  },
});

export function appsTable(apps: App[], all: boolean): string {
  const rows: { host: string; r: AppRevision }[] = [];
  for (const a of apps) {
    const newest = Math.max(...a.revisions.map((r) => r.revision));
    let first = true;
    for (const r of [...a.revisions].sort((x, y) => y.revision - x.revision)) {
      if (!all && r.traffic_percent === 0 && !r.traffic_tag && r.revision !== newest) continue;
      rows.push({ host: first ? a.app_hostname : '', r });
      first = false;
    }
  }
  return table(rows, [
    { header: 'host', value: (x) => x.host },
    { header: 'revision', value: (x) => `${x.r.revision} (image ${x.r.image_id})` },
    { header: 'status', value: (x) => x.r.status },
    { header: 'instances', value: (x) => (x.r.ready_instances !== undefined ? `${x.r.ready_instances}/${x.r.instances}` : x.r.instances) },
    { header: 'traffic', value: (x) => `${x.r.traffic_percent}%${x.r.traffic_tag ? `  tag ${x.r.traffic_tag}` : ''}` },
  ]);
}
