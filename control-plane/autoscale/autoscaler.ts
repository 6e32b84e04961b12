import type { Logger } from '../../shared/logging.js';
import type { AutoscaleConfig } from '../config.js';
import type { ContainerService } from '../containers/service.js';
import type { Db } from '../db/pool.js';
import type { ProxyRegistry } from '../discovery/proxies.js';
import { recordEvent } from '../events/outbox.js';
import type { EventRelay } from '../events/outbox.js';
import type { Leadership } from '../reconcile/leader.js';
import type { Activation } from '../containers/activation.js';
import { USER_STOPPED } from '../containers/service.js';
import { servingRevisions } from '../discovery/route-table.js';
import { provingSql } from '../apps/repo.js';
import { decide, newKpaState, type AppSettings, type Decision, type KpaState, type Sample } from './kpa.js';

interface ScaledImage {
  id: number;
  user_id: number;
  app_hostname: string;
  min_instances: number;
  /** started once to prove it can serve before it takes the traffic (apps/repo.ts provingSql) */
  proving: boolean;
  max_instances: number;
  container_concurrency: number;
  target_utilization: number;
  scale_down_delay_s: number;
}

export interface AutoscaleStatus {
  desired: number;
  actual: number;
  ready: number;
  observed_concurrency: number;
  target_per_instance: number;
  panic: boolean;
  last_decision: { at: string; from: number; to: number; reason: string } | null;
}

interface AppState {
  kpa: KpaState;
  samples: Sample[];
  last: Decision | null;
  lastChange: Change | null;
  actual: number;
  ready: number;
}

interface Change {
  at: number;
  from: number;
  to: number;
  reason: string;
  /** carried out: it started, made or stopped instances (what it did, not a count taken later that a wake meanwhile would blur) */
  took: boolean;
}

/** A decision that did not change the instance count is tried again after this long at the soonest. */
const SAME_MOVE_RETRY_MS = 30_000;

/**
 * The autoscaler: only the reconcile leader runs it. Every tick, for every revision that serves
 * (between its min_instances, less the instances its user stopped, and max_instances), it sums
 * the concurrency the live proxies report for the app's route, asks the KPA (kpa.ts) for an
 * instance count, and moves towards it: stopped instances are started first (their containers
 * exist: the fastest start), then new ones created (bounded by max_instances and the quota); on the
 * way down the newest instances are stopped through the normal graceful stop (proxies drain them
 * first: no failed request). Every change is an `autoscale.decision` event.
 */

export class Autoscaler {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private readonly apps = new Map<number, AppState>();
  /** apps whose last decision is still being carried out (a graceful stop takes seconds) */
  private readonly moving = new Map<number, Promise<void>>();

  constructor(private readonly d: {
    db: Db; service: ContainerService; proxies: ProxyRegistry; leader: Leadership; events: EventRelay; log: Logger; config: AutoscaleConfig;
    /** wakes apps for proxies; the autoscaler starts instances through it too */
    activation: Pick<Activation, 'isWaking' | 'wokeWithin' | 'ensure'>;
  }) {}

  start(): void {
    if (!this.d.config.enabled) return;
    this.timer = setInterval(() => void this.tick(), this.d.config.tickMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    while (this.running) await new Promise((r) => setTimeout(r, 20));
    await Promise.allSettled([...this.moving.values()]);
  }

  status(imageId: number): AutoscaleStatus | null {
    const a = this.apps.get(imageId);
    if (!a) return null;
    const lc = a.lastChange;
    return {
      desired: a.last?.desired ?? a.actual,
      actual: a.actual,
      ready: a.ready,
      observed_concurrency: a.last?.observed ?? 0,
      target_per_instance: a.last?.targetPerInstance ?? 0,
      panic: a.last?.panic ?? false,
      last_decision: lc ? { at: new Date(lc.at).toISOString(), from: lc.from, to: lc.to, reason: lc.reason } : null,
    };
  }

  /** One pass (exported for tests). Never overlaps itself. */
  async tick(): Promise<void> {
    if (this.running || !this.d.leader.isLeader) return;
    this.running = true;
    try {
      // every revision that serves (revisions without traffic are the reconcile loop's: drained
      // and removed); one with a floor once the reconcile loop has provisioned it
      const { rows } = await this.d.db.query<ScaledImage>(
        `SELECT i.id, i.user_id, i.app_hostname, i.min_instances, i.max_instances, i.container_concurrency, i.target_utilization,
                i.scale_down_delay_s, ${provingSql('i')} AS proving
           FROM images i WHERE i.status = 'ready' AND (i.min_instances = 0 OR i.min_instances_provisioned)`);
      const serving = await servingRevisions(this.d.db);
      const seen = new Set<number>();
      const observed = this.observed();
      // no proxy reporting is no data, not zero traffic: never scale down on it
      const blind = this.d.proxies.live().length === 0;
      const now = Date.now();
      for (const img of rows) {
        if (!serving.has(img.id)) continue;
        seen.add(img.id);
        if (this.d.activation.isWaking(img.id) || this.moving.has(img.id)) continue;
        // just woken: the requests the proxies held reach the new instance only after it is up, so
        // the traffic seen lags the wake. For a stable window the app may grow (the burst that woke
        // it) but not shrink (it was left alone altogether: no scaling out for a minute after a wake)
        const woke = this.d.activation.wokeWithin(img.id, this.d.config.stableWindowMs);
        await this.scale(img, observed.get(`img-${img.id}`) ?? 0, now, blind || woke).catch((e: Error) =>
          this.d.log.warn({ imageId: img.id, err: e.message }, 'autoscaler could not scale an app'));
      }
      for (const id of this.apps.keys()) if (!seen.has(id)) this.apps.delete(id);
    } finally {
      this.running = false;
    }
  }

  /** Concurrency per route, summed over live proxies (their last second's average). */
  private observed(): Map<string, number> {
    const out = new Map<string, number>();
    for (const p of this.d.proxies.live()) {
      for (const r of p.routes.values()) out.set(r.id, (out.get(r.id) ?? 0) + (r.concurrency ?? r.inflight));
    }
    return out;
  }

  private async scale(img: ScaledImage, concurrency: number, now: number, noShrink: boolean): Promise<void> {
    const { wanted, userStopped } = await this.instances(img.id);
    let a = this.apps.get(img.id);
    if (!a) {
      a = { kpa: newKpaState(now), samples: [], last: null, lastChange: null, actual: 0, ready: 0 };
      this.apps.set(img.id, a);
    }
    a.actual = wanted.length;
    a.ready = wanted.filter((c) => c.status === 'running' && c.health === 'healthy').length;
    a.samples.push({ at: now, concurrency });
    const keep = now - this.d.config.stableWindowMs;
    while (a.samples.length > 0 && a.samples[0].at < keep) a.samples.shift();
    const settings: AppSettings = {
      // instances its user stopped are taken out of the floor: they stay stopped, and the app is
      // not refilled behind the user's back (demand beyond the floor still scales it)
      // (one that scales from zero keeps the instance that proves it can serve, apps/repo.ts
      // provingSql, unless its user stopped that one too)
      minInstances: Math.max(img.proving && userStopped === 0 ? 1 : 0, img.min_instances - userStopped),
      maxInstances: img.max_instances,
      containerConcurrency: img.container_concurrency,
      targetUtilization: img.target_utilization,
      scaleDownDelayMs: img.scale_down_delay_s * 1000,
    };
    const d = decide(now, wanted.length, a.samples, settings, a.kpa, this.d.config);
    a.last = d;
    if (d.desired === wanted.length || (noShrink && d.desired < wanted.length)) return;
    const from = wanted.length;
    // the same move as last time, which changed nothing (a quota or max_instances in the way):
    // tried again, and recorded, at most every SAME_MOVE_RETRY_MS, not every tick (an event a tick
    // per blocked app filled the shared events table). One that took is made again at once: an
    // app scaled to zero and woken a moment later goes back to zero when its windows say so,
    // not half a minute later.
    const lc = a.lastChange;
    if (lc !== null && !lc.took && lc.from === from && lc.to === d.desired && now - lc.at < SAME_MOVE_RETRY_MS) return;
    // the decision is recorded when it is made; the moves follow (a graceful stop takes seconds)
    const change: Change = { at: now, from, to: d.desired, reason: d.reason, took: false };
    a.lastChange = change;
    await recordEvent(this.d.db, {
      type: 'autoscale.decision', userId: img.user_id, imageId: img.id, appHostname: img.app_hostname,
      payload: { image_id: img.id, from, to: d.desired, reason: d.reason, observed_concurrency: d.observed, target_per_instance: d.targetPerInstance, panic: d.panic },
    });
    this.d.events.nudge();
    this.d.log.info({ imageId: img.id, from, to: d.desired, reason: d.reason, observed: d.observed, panic: d.panic }, 'autoscale decision');
    // carried out beside the loop: one app's slow graceful stop does not hold up the others
    const move = this.move(img, wanted, d.desired)
      .then((took) => { change.took = took; })
      .catch((e: Error) => this.d.log.warn({ imageId: img.id, err: e.message }, 'autoscaler could not carry out a decision'));
    this.moving.set(img.id, move.finally(() => this.moving.delete(img.id)));
  }

  /**
   * The app's instances meant to run, oldest first, and how many its user stopped — read in one
   * statement, so one snapshot: counted apart, a user's stop committing between the two reads
   * made an instance leave `wanted` before it counted as stopped by its user, the floor looked one
   * short, and another instance was started behind the user's back (CI caught it).
   */
  private async instances(imageId: number): Promise<{ wanted: Array<{ id: number; status: string; health: string }>; userStopped: number }> {
    const { rows } = await this.d.db.query<{ id: number; status: string; health: string; desired: string }>(
      `SELECT id, status, health, desired FROM containers
        WHERE image_id = $1 AND (desired = 'running' OR (desired = 'stopped' AND status_reason = $2)) ORDER BY id`, [imageId, USER_STOPPED]);
    const wanted = rows.filter((r) => r.desired === 'running');
    return { wanted, userStopped: rows.length - wanted.length };
  }

  /** Carry out a decision; true when it changed the instance count (started, made or stopped any). */
  private async move(img: ScaledImage, wanted: Array<{ id: number }>, desired: number): Promise<boolean> {
    if (desired > wanted.length) return this.d.activation.ensure(img.user_id, img.id, desired);
    // newest first: the oldest instances are the warmest
    const extra = wanted.slice(desired).reverse();
    // each stop on its own: one that fails (its user stopped it meanwhile, Docker away) neither
    // hides the others nor ends the move while they still drain
    const settled = await Promise.allSettled(extra.map((c) => this.d.service.stop(img.user_id, c.id, 'autoscale')));
    for (const s of settled) {
      if (s.status === 'rejected') this.d.log.warn({ imageId: img.id, err: (s.reason as Error).message }, 'autoscaler could not stop an instance');
    }
    return settled.some((s) => s.status === 'fulfilled');
  }
}
