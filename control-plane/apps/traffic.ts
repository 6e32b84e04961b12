import { tagProblem } from '../../shared/tag.js';
import { isValidHostPattern } from '../../shared/hostname.js';
import { badRequest, conflict } from '../http/errors.js';

/**
 * An app's traffic split, as stored in `apps.traffic` and sent to `PUT /api/apps/:host/traffic`
 * (Cloud Run's shape): each entry names a revision by `image_id`, or `latest: true` for the newest
 * revision that can serve, with an integer `percent`; percents sum to 100. A `tag` gives the
 * entry's revision its own hostname, `{tag}---{app_hostname}`, whatever its percent.
 */
export interface TrafficEntry {
  image_id?: number;
  latest?: boolean;
  percent: number;
  tag?: string;
}

/** What the resolution needs to know of each revision of one app. */
export interface RevisionState {
  id: number;
  revision: number;
  status: 'building' | 'ready' | 'build_failed';
  /** it can take traffic: built and an instance was healthy once, or it scales from zero and needs no proof (apps/repo.ts routableSql) */
  routable: boolean;
  /**
   * it could not start (apps/start-failure.ts): built, but never served and given up on. It is
   * treated as a revision that is not ready: no share, no tag host, never `latest`, no instances.
   */
  failed: boolean;
  /**
   * being proven outside the split (apps/repo.ts provingAsideSql): deployed into a split set by
   * hand that gives it no share, it runs until one instance was healthy (so a split may name it
   * then), and is scaled to zero after, as any revision with no share
   */
  aside?: boolean;
}

/** What checking a split by hand needs besides (apps/repo.ts revisionStates). */
export interface TrafficRevision extends RevisionState {
  /**
   * an instance of it was healthy once (`routable_at`): one that scales from zero is routable
   * without it, but a share by hand for it could take the app down if it cannot start
   */
  served: boolean;
}

export interface ResolvedTraffic {
  /** image id → percent of the app's hostname (only revisions with a share above 0) */
  percent: Map<number, number>;
  /** image id → its tags */
  tags: Map<number, string[]>;
  /** the revision `latest` stands for now (null: no revision is ready) */
  latest: number | null;
  /**
   * Revisions that should have instances: every revision with a share or a tag, plus the newest
   * ready revision while `latest` waits for it to become routable (it must start to get there),
   * and one being proven outside the split (`aside`). Every other ready revision is scaled to
   * zero (drained first).
   */
  serving: Set<number>;
  /** the split with a pending revision promoted, when it is routable now (to be stored) */
  promoted: TrafficEntry[] | null;
}


/** Cloud Run's tag URL convention: one DNS label, so a wildcard certificate or record still covers it. */
export const tagHost = (tag: string, host: string) => `${tag}---${host}`;

/** A tag: a DNS label of lower-case letters, digits and single hyphens, starting with a letter. */
export function checkTag(tag: string, host: string, field: string): void {
  const problem = tagProblem(tag);
  if (problem !== null) throw badRequest(`${field} "${tag}" ${problem}`);
  const label = tagHost(tag, host).split('.')[0];
  if (label.length > 63) throw badRequest(`${field} "${tag}" makes the DNS label "${label}" longer than 63 characters`);
  if (!isValidHostPattern(tagHost(tag, host))) throw badRequest(`${field} "${tag}" makes "${tagHost(tag, host)}", which is not a valid hostname (253 characters at most)`);
}

/**
 * Resolve stored entries against the app's revisions. `latest` is the newest routable revision
 * (falling back to the newest ready one, so a first deploy shows up as 503 or wakes, not 404);
 * entries naming a revision that is not ready (or gone, or could not start) are skipped.
 *
 * `pending` is a revision deployed with traffic that has not taken it yet: until it is routable
 * the stored split keeps serving unchanged (so a canary or a rolled-back revision that happens to
 * be newer never gets the traffic meanwhile) and the pending revision only gets its instances;
 * once it is routable the split is the promoted one (`promote`) — the reconcile loop then stores
 * it (`promoted` tells it so).
 */
export function resolveTraffic(stored: TrafficEntry[], revisions: RevisionState[], pending: number | null = null): ResolvedTraffic {
  const ready = revisions.filter((r) => r.status === 'ready' && !r.failed).sort((a, b) => b.revision - a.revision);
  const newestRoutable = ready.find((r) => r.routable);
  const latest = (newestRoutable ?? ready[0])?.id ?? null;
  const readyIds = new Set(ready.map((r) => r.id));
  const pend = pending === null ? undefined : revisions.find((r) => r.id === pending);
  const promoted = pend !== undefined && readyIds.has(pend.id) && pend.routable;
  const entries = promoted ? promote(stored, pend.id, latest === pend.id) : stored;
  const out: ResolvedTraffic = { percent: new Map(), tags: new Map(), latest, serving: new Set(), promoted: promoted ? entries : null };
  let wantsLatest = false;
  for (const e of entries) {
    const id = e.latest ? latest : e.image_id ?? null;
    if (e.latest) wantsLatest = true;
    if (id === null || !readyIds.has(id)) continue;
    if (e.percent > 0) out.percent.set(id, (out.percent.get(id) ?? 0) + e.percent);
    if (e.tag) out.tags.set(id, [...(out.tags.get(id) ?? []), e.tag]);
  }
  for (const id of out.percent.keys()) out.serving.add(id);
  for (const id of out.tags.keys()) out.serving.add(id);
  // the revision that will take `latest` (or the pending one) must start to get there
  if (wantsLatest && ready[0]) out.serving.add(ready[0].id);
  if (pend !== undefined && readyIds.has(pend.id)) out.serving.add(pend.id);
  for (const r of revisions) if (r.aside === true && readyIds.has(r.id)) out.serving.add(r.id);
  return out;
}

/**
 * The split once a pending revision takes the traffic: all of it, as `latest` when it is the
 * newest routable revision (else pinned to it), keeping every tag.
 */
export function promote(current: TrafficEntry[], imageId: number, isLatest: boolean): TrafficEntry[] {
  const main: TrafficEntry = isLatest ? { latest: true, percent: 100 } : { image_id: imageId, percent: 100 };
  const next = [main];
  for (const e of current) {
    if (!e.tag) continue;
    if (e.latest || e.image_id === imageId) { if (!main.tag) main.tag = e.tag; else next.push({ image_id: imageId, percent: 0, tag: e.tag }); }
    else next.push({ image_id: e.image_id, percent: 0, tag: e.tag });
  }
  return next.map(canonical);
}

/** One key order for an entry (jsonb reorders keys: comparisons go through this). */
export function canonical(e: TrafficEntry): TrafficEntry {
  return { ...(e.latest ? { latest: true } : { image_id: e.image_id }), percent: e.percent, ...(e.tag ? { tag: e.tag } : {}) };
}

/**
 * Validate a split a user sent for this app (400 naming the entry): one of image_id / latest per
 * entry, each revision once and `ready`, integer percents summing to 100, unique valid tags, and
 * no more share than it has now (`now`: image id → percent, the stored split resolved) for a
 * revision that has not served, named or as `latest`.
 */
export function checkTraffic(entries: TrafficEntry[], host: string, revisions: TrafficRevision[], now: ReadonlyMap<number, number> = new Map()): TrafficEntry[] {
  if (entries.length === 0) throw badRequest('traffic must have at least one entry');
  const byId = new Map(revisions.map((r) => [r.id, r]));
  const latestNow = resolveTraffic([], revisions).latest;
  // (as Cloud Run routes only to a ready revision: one that never served could take the app down)
  const unproven = (r: TrafficRevision | undefined, percent: number) => r !== undefined && !r.served && percent > (now.get(r.id) ?? 0);
  const why = 'has not served yet (no instance of it has been healthy), so it takes no more share than it has; a deploy with traffic starts it once to prove it (after which a split may name it), and a tag (percent 0) lets you try it first (a request to its tag URL starts it)';
  const seen = new Set<number>();
  const tags = new Set<string>();
  let latest = false;
  let sum = 0;
  const out: TrafficEntry[] = [];
  entries.forEach((e, i) => {
    const at = `traffic[${i}]`;
    if ((e.latest === true) === (e.image_id !== undefined)) throw badRequest(`${at} must name either image_id or "latest": true`);
    if (e.latest === false) throw badRequest(`${at}: "latest" may only be true`);
    if (e.image_id !== undefined) {
      const r = byId.get(e.image_id);
      if (!r) throw badRequest(`${at}: image ${e.image_id} is not a revision of ${host}`);
      if (r.status !== 'ready') throw badRequest(`${at}: revision ${r.revision} (image ${r.id}) is ${r.status}, not ready`);
      if (r.failed) throw badRequest(`${at}: revision ${r.revision} (image ${r.id}) could not start (\`berth apps ${host}\` or GET /api/images/${r.id} says why) and takes no traffic; deploy a fixed revision, or a new one from it with other settings (\`berth deploy --no-build\`, POST /api/apps/${host}/revisions)`);
      if (unproven(r, e.percent)) throw badRequest(`${at}: revision ${r.revision} (image ${r.id}) ${why}`);
      if (seen.has(e.image_id)) throw badRequest(`${at}: revision ${r.revision} (image ${r.id}) appears twice`);
      seen.add(e.image_id);
    } else {
      if (latest) throw badRequest(`${at}: "latest" appears twice`);
      latest = true;
      const r = latestNow === null ? undefined : byId.get(latestNow);
      if (unproven(r, e.percent)) throw badRequest(`${at}: "latest" is revision ${r!.revision} (image ${r!.id}), which ${why}`);
    }
    if (!Number.isInteger(e.percent) || e.percent < 0 || e.percent > 100) throw badRequest(`${at}: percent must be an integer from 0 to 100`);
    if (e.percent === 0 && e.tag === undefined) throw badRequest(`${at}: a 0 % entry needs a tag (it would say nothing)`);
    sum += e.percent;
    if (e.tag !== undefined) {
      checkTag(e.tag, host, `${at}: tag`);
      if (tags.has(e.tag)) throw badRequest(`${at}: tag "${e.tag}" is used twice`);
      tags.add(e.tag);
    }
    out.push(canonical(e));
  });
  if (sum !== 100) throw badRequest(`traffic percents must sum to 100, not ${sum}`);
  return out;
}

/**
 * The split right after a new revision is uploaded. With `noTraffic` the split stays as it is,
 * with `latest` pinned to the revision it stands for now (so the new one gets nothing, now or when
 * it is ready). A plain deploy leaves it as it is too: the new revision is `pending` and takes
 * the traffic once it can serve (resolveTraffic / promote). A `tag` names the new revision at
 * once (moved off any revision that had it).
 */
export function trafficAfterDeploy(current: TrafficEntry[], opts: { imageId: number; noTraffic: boolean; tag: string | null; latestNow: number | null }): TrafficEntry[] {
  // pinned: `latest` becomes the revision it stands for now (kept as is while none is ready)
  let next = current.map((e) => (opts.noTraffic && e.latest && opts.latestNow !== null ? { image_id: opts.latestNow, percent: e.percent, ...(e.tag ? { tag: e.tag } : {}) } : { ...e }));
  // an entry already naming that revision takes the pinned share (a revision is listed once); two
  // tags cannot both name it: refused rather than one of them dropped
  const pinned = opts.noTraffic && opts.latestNow !== null ? current.findIndex((e) => e.latest) : -1;
  const same = pinned === -1 ? -1 : next.findIndex((e, i) => i !== pinned && e.image_id === opts.latestNow);
  if (same !== -1) {
    if (next[same].tag !== undefined && next[pinned].tag !== undefined) {
      throw conflict(`with no traffic, "latest" (tag "${next[pinned].tag}") would be pinned to image ${opts.latestNow}, which the split already lists with tag "${next[same].tag}"; a revision has one tag: remove one of them first (berth traffic) or deploy with traffic`, 'traffic_conflict');
    }
    next[same].percent += next[pinned].percent;
    if (next[same].tag === undefined && next[pinned].tag !== undefined) next[same].tag = next[pinned].tag;
    next.splice(pinned, 1);
  }
  if (opts.tag) {
    for (const e of next) if (e.tag === opts.tag) delete e.tag;
    const mine = next.find((e) => e.image_id === opts.imageId);
    if (mine) mine.tag = opts.tag;
    else next.push({ image_id: opts.imageId, percent: 0, tag: opts.tag });
  }
  // a 0 % entry with no tag says nothing
  next = next.filter((e) => e.percent > 0 || e.tag);
  return next.map(canonical);
}
