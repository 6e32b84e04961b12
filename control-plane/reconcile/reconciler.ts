import type { Logger } from '../../shared/logging.js';
import type { ResolvedConfig } from '../config.js';
import type { Db } from '../db/pool.js';
import type { ContainerRow, ImageRow } from '../images/repo.js';
import { DockerUnavailableError } from '../runtime/docker.js';
import type { ContainerRuntime, ContainerState, ManagedContainer } from '../runtime/containers.js';
import { dockerTime, VANISHED, type ContainerService } from '../containers/service.js';
import type { Leadership } from './leader.js';
import { servingRevisions } from '../discovery/route-table.js';
import { owedSql, provingAsideSql, provingSql, settlePending } from '../apps/repo.js';
import { exitReason } from '../containers/exit-reason.js';
import { judgeBlocked, judgeStarts } from '../apps/start-failure.js';
import { collectRevisions } from '../apps/retention.js';

/** An app whose DELETE began less than ten minutes ago (SQL on `apps a`): that DELETE removes its instances. */
const DELETING_LATELY = "a.deleting_at > now() - interval '10 minutes'";

export interface ReconcileReport {
  skipped?: string;
  died: number;
  replaced: number;
  orphansRemoved: number;
  corrected: number;
  created: number;
  stopsFinished: number;
  /** instances of revisions without traffic removed */
  retired: number;
  /** old inactive revisions deleted (retention) */
  collected?: number;
}

/** A container that dies within this long after it started counts as crash-looping. */
const QUICK_DEATH_MS = 30_000;
/** `creating` / `stopping` rows untouched this long belong to a control plane that died mid-way. */
const STUCK_MS = 60_000;

/**
 * Makes Docker match the database, on start, every `reconcileIntervalMs`, and soon after any
 * Docker event of a berth container:
 * - a container that should run but died (exited, OOM-killed, `docker kill`ed, removed) is
 *   recorded (container.stopped) and replaced under the same id (container.replaced), with
 *   exponential backoff when it keeps dying right after starting;
 * - each ready image gets `min_instances` containers once (bounded by max_instances); they are
 *   kept existing, but what the user stops or deletes is not restarted or recreated;
 * - labelled containers of this cluster that no row knows are removed (after a grace period, so
 *   a container being created right now is never mistaken for an orphan);
 * - rows whose container vanished are corrected; stops and creations left half-done by a
 *   crashed control plane are finished.
 * Runs only on the control plane holding the reconcile advisory lock.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private kickTimer: NodeJS.Timeout | undefined;
  private running: Promise<ReconcileReport> | undefined;
  /**
   * Work a pass starts but does not wait for (drains of revisions without traffic, removal of the
   * Docker images retention deleted): awaited on stop, and by settled().
   */
  private background = new Set<Promise<void>>();
  private stopped = true;
  private unwatch: (() => void) | undefined;
  private backoff = new Map<number, { attempts: number; nextAt: number }>();
  /** Docker ids with a start/restart event since the last pass */
  private restarted = new Set<string>();
  private readonly log: Logger;

  constructor(
    private readonly d: {
      db: Db; runtime: ContainerRuntime; service: ContainerService; leader: Leadership;
      config: ResolvedConfig; log: Logger; clusterId: string;
      /** removes a deleted revision's Docker image and build directory (images/plugin.ts discardImage) */
      discard: (img: ImageRow) => Promise<void>;
    },
  ) {
    this.log = d.log.child({ component: 'reconcile' });
  }

  start(): void {
    this.stopped = false;
    this.unwatch = this.d.runtime.watchEvents('berth.managed=true', (e) => {
      const cluster = e.labels['berth.cluster'];
      if (cluster !== undefined && cluster !== this.d.clusterId) return; // another berth database's container
      if (e.action === 'start' || e.action === 'restart') {
        // possibly restarted outside berth: a new host port / address to adopt
        this.restarted.add(e.dockerId);
        this.kick();
      } else if (['die', 'destroy', 'oom', 'kill', 'stop'].includes(e.action)) this.kick();
    });
    this.kick();
    this.timer = setInterval(() => this.kick(), this.d.config.reconcileIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.kickTimer) clearTimeout(this.kickTimer);
    this.unwatch?.();
    // a pass stuck retrying an unreachable daemon must not hold up shutdown for long
    await Promise.race([
      Promise.all([this.running?.catch(() => {}), ...this.background]),
      new Promise((r) => setTimeout(r, 2000).unref()),
    ]);
  }

  /** Work of a pass that outlives it: logged when it fails (unless stopping), awaited on stop. */
  private track(work: Promise<void>, onError: (e: Error) => void): void {
    const p: Promise<void> = work
      .catch((e: Error) => { if (!this.stopped) onError(e); })
      .finally(() => { this.background.delete(p); });
    this.background.add(p);
  }

  /** Resolves when the work earlier passes left running (drains, image removals) is done. */
  async settled(): Promise<void> {
    while (this.background.size > 0) await Promise.all([...this.background]);
  }

  /** Reconcile soon (coalesced). */
  kick(delayMs = 100): void {
    if (this.stopped || this.kickTimer) return;
    this.kickTimer = setTimeout(() => {
      this.kickTimer = undefined;
      void this.run().catch(() => {});
    }, delayMs);
    this.kickTimer.unref();
  }

  /** One pass that starts after this call (waits for a pass in progress first). */
  run(): Promise<ReconcileReport> {
    if (this.running) return this.running.then(() => this.run());
    this.running = this.once()
      .catch((e) => {
        if (e instanceof DockerUnavailableError) this.log.debug({ err: e.message }, 'reconcile skipped: Docker unavailable');
        else this.log.error({ err: e }, 'reconcile pass failed');
        return { skipped: (e as Error).message, died: 0, replaced: 0, orphansRemoved: 0, corrected: 0, created: 0, stopsFinished: 0, retired: 0 };
      })
      .finally(() => { this.running = undefined; });
    return this.running;
  }

  private async once(): Promise<ReconcileReport> {
    const rep: ReconcileReport = { died: 0, replaced: 0, orphansRemoved: 0, corrected: 0, created: 0, stopsFinished: 0, retired: 0 };
    if (!this.d.leader.isLeader) return { ...rep, skipped: 'not the leader' };
    const { db, runtime, service } = this.d;
    const docker = await runtime.listByLabel(['berth.managed=true']);
    const byId = new Map<string, ManagedContainer>(docker.map((c) => [c.dockerId, c]));
    const { rows } = await db.query<ContainerRow>('SELECT * FROM containers ORDER BY id');
    const now = Date.now();
    const work: Promise<unknown>[] = [];
    const restartedIds = this.restarted;
    this.restarted = new Set();

    for (const snapshot of rows) {
      if (service.locks.isLocked(snapshot.id)) continue;
      work.push(service.locks.run(snapshot.id, async () => {
        const { rows: [c] } = await db.query<ContainerRow>('SELECT * FROM containers WHERE id = $1', [snapshot.id]);
        if (!c) return;
        const dc = c.docker_id ? byId.get(c.docker_id) : undefined;
        const age = now - new Date(c.updated_at).getTime();
        try {
          if (c.desired === 'running') {
            if (c.status === 'running' && dc?.state === 'running') {
              // still running, but maybe as a new incarnation (docker restart): new port / address
              const listedPort = dc.ports.find((p) => p.privatePort === c.internal_port)?.publicPort ?? null;
              const moved = listedPort !== c.host_port || (c.container_ip !== null && dc.ips.length > 0 && !dc.ips.includes(c.container_ip));
              if (moved || restartedIds.has(dc.dockerId)) {
                const st = await runtime.inspect(dc.dockerId, c.internal_port ?? undefined);
                if (st?.running && this.isNewIncarnation(c, st)) {
                  if (await service.noteRestarted(c, st)) rep.corrected++;
                }
              }
            } else if (c.status === 'running' && (!dc || dc.state !== 'running')) {
              const st = c.docker_id ? await runtime.inspect(c.docker_id, c.internal_port ?? undefined) : null;
              if (st?.running) {
                // restarted between the list and now: adopt its new port / address if it moved
                if (this.isNewIncarnation(c, st) && (await service.noteRestarted(c, st))) rep.corrected++;
                return;
              }
              const reason = !st ? VANISHED : st.oomKilled ? 'out of memory' : exitReason(st.exitCode);
              const died = await service.markDied(c, { reason, exitCode: st?.exitCode ?? null });
              if (!died) return;
              rep.died++;
              this.noteDeath(c);
              this.log.warn({ containerId: c.id, reason }, 'container died');
              if (await this.replaceIfDue(died, reason)) rep.replaced++;
            } else if (c.status === 'exited' || c.status === 'failed' || (c.status === 'creating' && age > STUCK_MS)) {
              if (await this.replaceIfDue(c, c.status_reason ?? c.status)) rep.replaced++;
            } else if (c.status === 'stopping' && age > STUCK_MS) {
              await service.finishStop(c);
              rep.stopsFinished++;
            }
          } else {
            if (c.status === 'stopping' && age > STUCK_MS) {
              await service.finishStop(c);
              rep.stopsFinished++;
            } else if (c.status === 'running') {
              await service.stopLocked(c, 'reconcile');
              rep.stopsFinished++;
            } else if (c.status === 'stopped' && dc?.state === 'running') {
              await runtime.stop(dc.dockerId, this.d.config.stopTimeoutSec);
              rep.corrected++;
            } else if (c.docker_id && !dc && (c.status === 'stopped' || c.status === 'exited' || c.status === 'failed')) {
              await db.query('UPDATE containers SET docker_id = NULL, host_port = NULL, updated_at = now() WHERE id = $1 AND docker_id = $2', [c.id, c.docker_id]);
              rep.corrected++;
            }
          }
        } catch (e) {
          this.log.warn({ containerId: c.id, err: (e as Error).message }, 'reconcile of container failed');
        }
      }));
    }
    await Promise.allSettled(work);

    // Orphans: labelled containers of this cluster (or unlabelled legacy ones) no row knows.
    const { rows: known } = await db.query<{ docker_id: string }>('SELECT docker_id FROM containers WHERE docker_id IS NOT NULL');
    const knownIds = new Set(known.map((r) => r.docker_id));
    for (const dc of docker) {
      if (knownIds.has(dc.dockerId)) continue;
      const cluster = dc.labels['berth.cluster'];
      if (cluster !== undefined && cluster !== this.d.clusterId) continue;
      const rowId = Number(dc.labels['berth.container']);
      const berthNamed = dc.names.some((n) => /^berth-u\d+-i\d+-/.test(n));
      if (!dc.labels['berth.container'] && !berthNamed) continue; // e.g. a build step container
      if (now - dc.created * 1000 < this.d.config.orphanGraceMs) continue;
      if (Number.isSafeInteger(rowId) && service.locks.isLocked(rowId)) continue;
      try {
        await runtime.remove(dc.dockerId);
        rep.orphansRemoved++;
        this.log.warn({ dockerId: dc.dockerId.slice(0, 12), name: dc.names[0] }, 'removed an orphan container the database does not know');
      } catch (e) {
        this.log.warn({ err: (e as Error).message, dockerId: dc.dockerId.slice(0, 12) }, 'could not remove orphan container');
      }
    }

    // Revisions that never served and cannot start are given up on (apps/start-failure.ts): no
    // traffic, and their instances retire below with those of other revisions that serve nothing.
    const gaveUp = await judgeStarts({ db, log: this.log, deadlineMs: this.d.config.revisionStartDeadlineMs });
    // Deploys waiting for their revision to serve: promoted (stored) once it can, dropped when its
    // build failed or it could not start. The route table already routes a routable pending
    // revision; this stores it.
    if ((await settlePending(db)) || gaveUp) this.d.service.routesChanged();

    // Revisions left with no traffic and no tag are scaled to zero: their image owes them its
    // min_instances again (provisioned anew if traffic comes back) and each container is drained
    // from every proxy, then removed. One image at a time, checked again under the lock.
    const serving = await servingRevisions(db);
    // retention's grace runs from the last time a revision served (a minute's resolution: few writes)
    await db.query(`UPDATE images SET last_active_at = now() WHERE id = ANY($1::bigint[]) AND last_active_at < now() - interval '1 minute'`, [[...serving]]);
    // (not those of an app being deleted lately: its DELETE removes them, with that reason; one
    // that stopped half-way — Docker away, its control plane gone — leaves them to this loop again)
    const { rows: idle } = await db.query<ContainerRow>(
      `SELECT c.* FROM containers c JOIN images i ON i.id = c.image_id
        WHERE i.status = 'ready' AND NOT EXISTS (SELECT 1 FROM apps a WHERE a.app_hostname = i.app_hostname AND ${DELETING_LATELY})
        ORDER BY c.id`);
    const byImage = new Map<number, ContainerRow[]>();
    for (const c of idle) {
      if (serving.has(c.image_id) || service.locks.isLocked(c.id)) continue;
      byImage.set(c.image_id, [...(byImage.get(c.image_id) ?? []), c]);
    }
    if (byImage.size) {
      await db.query('UPDATE images SET min_instances_provisioned = false WHERE id = ANY($1::bigint[])', [[...byImage.keys()]]);
      this.log.info({ images: [...byImage.keys()], containers: [...byImage.values()].reduce((n, l) => n + l.length, 0) }, 'scaling revisions without traffic to zero');
    }
    rep.retired = [...byImage.values()].reduce((n, l) => n + l.length, 0);
    // not awaited: a drain takes up to drainTimeoutMs and must not hold up this pass (the locks
    // keep the next pass off these containers meanwhile)
    for (const [imageId, cs] of byImage) {
      this.track(this.retire(imageId, cs), (e) => this.log.warn({ imageId, err: e.message }, 'could not retire a revision without traffic'));
    }

    // min_instances: provisioned once per ready image. Afterwards the rows keep existing (a dead
    // container is replaced under the same row above), a user-stopped one stays stopped and a
    // user-deleted one is not recreated: explicit user intent wins over min_instances.
    // A revision that scales from zero, deployed with traffic, gets one instance to prove it can
    // serve before it takes the traffic (apps/repo.ts provingSql).
    const owed = owedSql('i');
    // a revision no longer owed instances, or no longer served, is not blocked: an old time would
    // be judged if it were tried again (apps/start-failure.ts judgeBlocked)
    await db.query(
      `UPDATE images i SET start_blocked = NULL, start_blocked_at = NULL
        WHERE i.start_blocked_at IS NOT NULL AND NOT (${owed} AND i.id = ANY($1::bigint[]))`, [[...serving]]);
    const { rows: pending } = await db.query<ImageRow & { proving: boolean; aside: boolean }>(
      `SELECT i.*, ${provingSql('i')} AS proving, ${provingAsideSql('i')} AS aside FROM images i WHERE ${owed} ORDER BY i.id`);
    const tried: number[] = [];
    for (const img of pending) {
      if (this.stopped) break;
      if (!serving.has(img.id)) continue; // a revision nobody sends traffic to runs nothing
      tried.push(img.id);
      try {
        const made = await service.create(img.user_id, img.id, 0, { provision: true, atLeast: img.proving ? 1 : 0, atMost: img.aside ? 1 : undefined });
        rep.created += made.length;
        if (made.length) this.log.info({ imageId: img.id, created: made.length, min: img.min_instances }, 'started containers for min_instances');
      } catch (e) {
        this.log.warn({ imageId: img.id, err: (e as Error).message }, 'could not start min_instances containers');
      }
    }
    // those none of whose instances could be made since the start deadline, as seen just now, are
    // given up on (their deploys dropped: stored at once, as above)
    if (!this.stopped && (await judgeBlocked({ db, log: this.log, deadlineMs: this.d.config.revisionStartDeadlineMs }, tried))) {
      await settlePending(db);
      this.d.service.routesChanged();
    }
    // Old inactive revisions beyond what the platform keeps (apps/retention.ts); their Docker
    // images and build directories go after the commit, best effort, outside the pass (removing
    // an image can take Docker seconds; the next pass must not wait for it)
    if (this.d.config.revisionsKept !== null && !this.stopped) {
      const gone = await collectRevisions(db, this.d.config.revisionsKept, this.d.config.revisionsGraceMs);
      if (gone.length) {
        rep.collected = gone.length;
        this.d.service.routesChanged();
        this.track((async () => { for (const img of gone) await this.d.discard(img); })(),
          (e) => this.log.warn({ err: e.message }, 'could not remove the Docker images of deleted revisions'));
      }
    }

    for (const id of this.backoff.keys()) if (!rows.some((r) => r.id === id)) this.backoff.delete(id);
    if (rep.collected || rep.died || rep.replaced || rep.orphansRemoved || rep.corrected || rep.created || rep.stopsFinished || rep.retired) this.log.info(rep, 'reconciled');
    return rep;
  }

  /** Drain and remove the instances of a revision without traffic (unless traffic came back). */
  private async retire(imageId: number, cs: ContainerRow[]): Promise<void> {
    const { db, service } = this.d;
    if ((await servingRevisions(db)).has(imageId)) return;
    await Promise.allSettled(cs.map((c) => service.locks.run(c.id, async () => {
      // (gone meanwhile, or its app is being deleted since: that DELETE removes it)
      const { rows: [cur] } = await db.query<ContainerRow>(
        `SELECT c.* FROM containers c JOIN images i ON i.id = c.image_id WHERE c.id = $1
           AND NOT EXISTS (SELECT 1 FROM apps a WHERE a.app_hostname = i.app_hostname AND ${DELETING_LATELY})`, [c.id]);
      if (!cur) return;
      try {
        await service.removeLocked(cur, 'no traffic');
      } catch (e) {
        this.log.warn({ containerId: c.id, err: (e as Error).message }, 'could not remove an instance of a revision without traffic');
      }
    })));
    // traffic came back while they drained: the provisioning that counted them is owed again
    if ((await servingRevisions(db)).has(imageId)) {
      await db.query('UPDATE images SET min_instances_provisioned = false WHERE id = $1', [imageId]);
      this.kick();
    }
  }

  /** The running Docker container differs from what the row recorded (port, address or start time). */
  private isNewIncarnation(c: ContainerRow, st: ContainerState): boolean {
    if (st.hostPort !== c.host_port) return true;
    if (st.ip && c.container_ip && st.ip !== c.container_ip) return true;
    const docker = dockerTime(st.startedAt);
    return docker !== null && c.started_at !== null && Math.abs(Date.parse(docker) - new Date(c.started_at).getTime()) > 1000;
  }

  /** A death of `c` for the replacement backoff; `quick`: count it whenever it came (the disk watch's). */
  noteDeath(c: ContainerRow, alwaysQuick = false): void {
    const quick = alwaysQuick || (c.started_at !== null && Date.now() - new Date(c.started_at).getTime() < QUICK_DEATH_MS);
    const b = this.backoff.get(c.id) ?? { attempts: 0, nextAt: 0 };
    b.attempts = quick ? b.attempts + 1 : 0;
    b.nextAt = b.attempts > 1 ? Date.now() + Math.min(60_000, 1000 * 2 ** (b.attempts - 2)) : 0;
    this.backoff.set(c.id, b);
  }

  private async replaceIfDue(c: ContainerRow, reason: string): Promise<boolean> {
    const b = this.backoff.get(c.id) ?? { attempts: 0, nextAt: 0 };
    if (Date.now() < b.nextAt) return false;
    try {
      await this.d.service.replaceLocked(c, reason);
      return true;
    } catch (e) {
      // failed to launch: back off before the next attempt
      b.attempts++;
      b.nextAt = Date.now() + Math.min(60_000, 1000 * 2 ** Math.min(b.attempts, 6));
      this.backoff.set(c.id, b);
      this.log.warn({ containerId: c.id, err: (e as Error).message, retryAt: new Date(b.nextAt).toISOString() }, 'replacement failed');
      return false;
    }
  }
}
