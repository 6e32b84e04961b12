import { tagProblem } from '../../tag.js';
import { UsageError } from '../../cli/args.js';
import { ClientError, EXIT } from '../client.js';
import { appHostArg, defineClientCommand } from '../command.js';
import { printJson, table } from '../output.js';
import type { App } from './apps.js';
import { appUrls } from '../urls.js';
import { printable } from '../style.js';
import type { BerthClient } from '../client.js';

/**
 * `berth traffic HOST [REV=PERCENT …] [--tag TAG=REV …]`: show or set an app's split
 * (PUT /api/apps/:host/traffic). REV is a revision number or `latest` (the newest revision that
 * served); percents are integers summing to 100. Like Cloud Run's
 * `gcloud run services update-traffic --to-revisions=2=90,3=10 --set-tags=canary=3`.
 */
export const run = defineClientCommand({
  usage: 'berth traffic HOST [REV=PERCENT ...] [--tag TAG=REV] [--remove-tag TAG] [--json]',
  description: `Show an app's traffic split, or set it. REV is a revision number (see \`berth apps\`) or "latest".
  berth traffic shop.example.com                     show the split
  berth traffic shop.example.com 2=90 3=10           canary: 10 % to revision 3
  berth traffic shop.example.com 3=100               promote (or roll back) to one revision
  berth traffic shop.example.com latest=100          follow every new deploy again
  berth traffic shop.example.com 2=100 --tag canary=3  revision 3 only at canary---shop.example.com
Percents are whole numbers summing to 100; the change is atomic.`,
  positional: { min: 1, max: 101, names: 'HOST' },
  options: [
    { name: 'tag', help: 'TAG=REV (comma-separated for several): give a revision a tag URL TAG---HOST; other tags are kept' },
    { name: 'remove-tag', help: 'TAG (comma-separated for several): remove these tags' },
  ],
  async run({ opts, args, json, client, stdout }) {
    const [rawHost, ...assignments] = args;
    const host = appHostArg(rawHost);
    const path = `/api/apps/${encodeURIComponent(host)}`;
    const tags = opts.tag === undefined ? [] : opts.tag.split(',').map((t) => parsePair(t, '--tag TAG=REV', /^[^=]+$/));
    for (const [tag] of tags) {
      const problem = tagProblem(tag);
      if (problem !== null) throw new UsageError(`--tag "${tag}" ${problem}`);
    }
    if (assignments.length === 0 && tags.length === 0 && opts['remove-tag'] === undefined) {
      const app = await client.get<App>(path);
      if (json) printJson(app);
      else stdout.write(splitTable(app, await proxyUrl(client)));
      return EXIT.ok;
    }
    const split = assignments.map((a) => parsePair(a, 'REV=PERCENT', /^(latest|\d{1,9})$/, true));
    const sum = split.reduce((s, [, p]) => s + Number(p), 0);
    if (split.length && sum !== 100) throw new UsageError(`the percents add up to ${sum}, not 100`);
    const app = await client.get<App>(path);
    const byRevision = new Map(app.revisions.map((r) => [String(r.revision), r.image_id]));
    const image = (rev: string, what: string) => {
      const id = byRevision.get(rev);
      if (id === undefined) throw new ClientError(`${host} has no revision ${rev} (${what}); it has ${[...byRevision.keys()].join(', ') || 'none'}`, EXIT.usage);
      return id;
    };
    type Entry = { image_id?: number; latest?: boolean; percent: number; tag?: string };
    const entries: Entry[] = [];
    /** what each entry stands for in the user's words (the API's refusals name `traffic[i]`) */
    const origin: string[] = [];
    if (split.length) {
      for (const [rev, pct] of split) {
        entries.push(rev === 'latest' ? { latest: true, percent: Number(pct) } : { image_id: image(rev, `in ${rev}=${pct}`), percent: Number(pct) });
        origin.push(`${rev}=${pct}`);
      }
    } else {
      // only tags change: keep the split as it is
      for (const e of app.traffic) {
        if (e.percent <= 0) continue;
        entries.push({ ...(e.latest ? { latest: true } : { image_id: e.image_id }), percent: e.percent });
        origin.push(`the current ${e.latest ? 'latest' : `revision ${e.revision ?? '?'}`}=${e.percent}`);
      }
    }
    // tags stay unless named again (or removed with --remove-tag), as Cloud Run's update-traffic keeps them
    const removed = new Set(opts['remove-tag'] === undefined ? [] : opts['remove-tag'].split(',').map((t) => t.trim()));
    // (a tag that is not there: a typo, which would otherwise change nothing and say it was done)
    const present = new Set(app.traffic.map((e) => e.tag).filter((t) => t));
    for (const t of removed) {
      if (!present.has(t)) throw new ClientError(`${host} has no tag "${t}" to remove; its tags: ${[...present].join(', ') || 'none'}`, EXIT.usage);
    }
    for (const e of app.traffic) {
      if (!e.tag || removed.has(e.tag) || tags.some(([t]) => t === e.tag)) continue;
      const id = e.latest ? app.latest_image_id ?? undefined : e.image_id;
      if (id === undefined) continue;
      const same = entries.find((x) => (x.image_id === id || (e.latest && x.latest)) && x.tag === undefined);
      if (same) same.tag = e.tag;
      else { entries.push({ image_id: id, percent: 0, tag: e.tag }); origin.push(`the kept tag ${e.tag}`); }
    }
    for (const [tag, rev] of tags) {
      if (rev === 'latest') throw new UsageError('--tag needs a revision number (a tag names one revision)');
      const id = image(rev, `in --tag ${tag}=${rev}`);
      const same = entries.find((e) => e.image_id === id && e.tag === undefined);
      // (a tag given to an entry of the split: a refusal of that entry is likelier the tag's)
      if (same) { same.tag = tag; origin[entries.indexOf(same)] = `--tag ${tag}=${rev}`; }
      else { entries.push({ image_id: id, percent: 0, tag }); origin.push(`--tag ${tag}=${rev}`); }
    }
    let updated: App;
    try {
      updated = await client.put<App>(`${path}/traffic`, { traffic: entries });
    } catch (e) {
      // `traffic[1]: …` said as the user wrote it: `--tag bad=2: …`
      const m = e instanceof ClientError ? /^traffic\[(\d+)\]/.exec(e.message) : null;
      const said = m ? origin[Number(m[1])] : undefined;
      if (m && said !== undefined) (e as ClientError).message = printable(said) + (e as ClientError).message.slice(m[0].length);
      throw e;
    }
    const after = updated?.revisions ? updated : await client.get<App>(path);
    if (json) printJson(after);
    else stdout.write(`Traffic of ${host} updated.\n${splitTable(after, await proxyUrl(client))}`);
    return EXIT.ok;
  },
});

function parsePair(raw: string, form: string, left: RegExp, percent = false): [string, string] {
  const m = /^([^=]+)=(.+)$/.exec(raw.trim());
  if (!m || !left.test(m[1])) throw new UsageError(`"${raw}" is not ${form}`);
  if (percent && (!/^\d{1,3}$/.test(m[2]) || Number(m[2]) > 100)) throw new UsageError(`"${raw}": the percent must be a whole number from 0 to 100`);
  if (!percent && !/^(latest|\d{1,9})$/.test(m[2])) throw new UsageError(`"${raw}": REV must be a revision number`);
  return [m[1], m[2]];
}

/** The proxy's public URL (GET /api/info), for URLs with the port users reach; null when unknown. */
async function proxyUrl(client: BerthClient): Promise<string | null> {
  return (await client.get<{ proxy_url?: string | null }>('/api/info', { anonymous: true }).catch(() => ({ proxy_url: null }))).proxy_url ?? null;
}

/**
 * The split as stored (`latest=10` stays `latest`, not the revision it stands for now) and what
 * the next deploy does with it: deploys keep shares given to revision numbers, as Cloud Run does.
 */
export function splitRule(app: Pick<App, 'app_hostname' | 'traffic'>): string {
  const shares = app.traffic.filter((e) => e.percent > 0);
  const said = shares.map((e) => `${e.latest ? 'latest' : e.revision ?? `image ${e.image_id}`}=${e.percent}`).join(' ');
  const latest = shares.reduce((a, e) => a + (e.latest ? e.percent : 0), 0);
  const rule = latest === 100 || shares.length === 0 ? 'each deploy takes all the traffic once it can serve'
    : latest > 0 ? `deploys keep the shares given to revision numbers; each new one takes the latest share (${latest}%)`
    : `deploys keep this split: a new revision gets no traffic until a split names it (berth traffic ${printable(app.app_hostname)} latest=100 to follow deploys)`;
  return `split: ${said || '(none)'}; ${rule}\n`;
}

function splitTable(app: App, proxy: string | null): string {
  const rows = [...app.revisions].sort((a, b) => b.revision - a.revision).filter((r) => r.traffic_percent > 0 || r.traffic_tag);
  const head = `${printable(`${app.app_hostname}  ${proxy ? appUrls(app.app_hostname, proxy)[0] : app.url}`)}\n`;
  if (!rows.length) return `${head}(no revision serves yet)\n`;
  return head + splitRule(app) + table(rows, [
    { header: 'revision', value: (r) => `${r.revision}${r.image_id === app.latest_image_id ? ' (latest)' : ''}` },
    { header: 'image', value: (r) => r.image_id },
    { header: 'status', value: (r) => r.status },
    { header: 'traffic', value: (r) => `${r.traffic_percent}%` },
    { header: 'tag url', value: (r) => (r.traffic_tag && proxy ? appUrls(`${r.traffic_tag}---${app.app_hostname}`, proxy)[0] : r.tag_url) },
  ]);
}
