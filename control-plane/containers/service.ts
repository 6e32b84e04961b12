import { randomBytes } from 'node:crypto';
import type { Logger } from '../../shared/logging.js';
import type { ResolvedConfig } from '../config.js';
import { withTransaction, type Db, type DbClient, type Queryable } from '../db/pool.js';
import { recordEvent, type EventRelay } from '../events/outbox.js';
import { ApiError, conflict, notFound } from '../http/errors.js';
import type { ContainerRow, ImageRow } from '../images/repo.js';
import { DockerUnavailableError } from '../runtime/docker.js';
import { ContainerRuntimeError, type ContainerRuntime, type ContainerState } from '../runtime/containers.js';
import type { RouteHub } from '../discovery/hub.js';
import type { ProxyRegistry } from '../discovery/proxies.js';
import { endpointAddress } from '../discovery/route-table.js';
import { closeUsage, instanceSize, openUsage } from '../billing/usage.js';
import { containerEnv } from '../images/env.js';
import { signalNote } from './exit-reason.js';

/** One operation per container at a time, in this process. */
export class KeyedMutex {
  private tails = new Map<number, Promise<unknown>>();
  isLocked(key: number): boolean {
    return this.tails.has(key);
  }
  run<T>(key: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const p = prev.catch(() => {}).then(fn);
    const tail = p.catch(() => {});
    this.tails.set(key, tail);
    void tail.then(() => { if (this.tails.get(key) === tail) this.tails.delete(key); });
    return p;
  }
}

export interface ContainerServiceDeps {
  db: Db;
  runtime: ContainerRuntime;
  events: EventRelay;
  hub: RouteHub;
  proxies: ProxyRegistry;
  config: ResolvedConfig;
  log: Logger;
  clusterId: string;
  /** called when a container starts running (the health checker probes it at once) */
  onStarted?: (c: ContainerRow) => void;
}

/**
 * A container's Docker name: opaque. Docker's DNS on the app network answers reverse lookups with
 * it, so a name like `berth-u7-i42-…` told any tenant which users and apps share the host and how
 * many instances each runs. Who owns a container is in its labels and in the database.
 */
export const containerName = () => `berth-${randomBytes(8).toString('hex')}`;

/** Docker errors → API errors: daemon away is 503, anything else Docker refused is 502 with its message; any other error as it is (a 500 the handler logs, its text not sent). */
export function dockerApiError(e: unknown): Error {
  if (e instanceof DockerUnavailableError) return new ApiError(503, 'docker_unavailable', e.message);
  if (e instanceof ContainerRuntimeError) return new ApiError(502, 'docker_error', e.message);
  // anything else is ours: the error handler logs it and tells the client no more than that
  return e instanceof Error ? e : new Error(String(e));
}

/** Docker's StartedAt ("0001-01-01T00:00:00Z" when never started) → ISO string or null. */
export function dockerTime(t: string | null | undefined): string | null {
  if (!t || t.startsWith('0001-')) return null;
  return Number.isNaN(Date.parse(t)) ? null : t;
}

export async function getContainer(q: Queryable, userId: number, id: number): Promise<ContainerRow | undefined> {
  const { rows } = await q.query<ContainerRow>('SELECT * FROM containers WHERE id = $1 AND user_id = $2', [id, userId]);
  return rows[0];
}

async function imageOf(q: Queryable, c: ContainerRow): Promise<ImageRow> {
  const { rows } = await q.query<ImageRow>('SELECT * FROM images WHERE id = $1', [c.image_id]);
  if (!rows[0]) throw new Error(`image ${c.image_id} of container ${c.id} is gone`);
  return rows[0];
}

/**
 * `status_reason` of an instance its user stopped. In an app with a floor the autoscaler and the
 * activator never start it again (it leaves the floor; demand beyond it gets new instances);
 * `POST …/start` does. An app that scales to zero runs on demand: a request wakes it anyway.
 */
export const USER_STOPPED = 'stopped by its user';
/**
 * `status_reason` of an instance on its way out for good (DELETE, its app deleted): it drains,
 * then its row goes. It no longer counts against max_instances, so the autoscaler can start the
 * floor's replacement at once (with max_instances 1 it was refused until the row went, then
 * retried half a minute later: the app answered 503 meanwhile).
 */
export const DELETING = 'being deleted';

/** A container that exited as it was started (the app's own failure, not Docker's). */
class ExitedAtOnce extends ContainerRuntimeError {}

/** The reason the reconcile loop gives a container removed behind berth's back. */
export const VANISHED = 'container vanished';

/** Docker could not run the image's command (not in the image, not executable): the image's fault, not Docker's. */
const CANNOT_EXEC = /unable to start container process: exec:|starting container process caused:? "?exec:|exec format error/i;

/** Lines of an instance's output kept in its status_reason when it exits at once (its container is removed). */
const EXIT_OUTPUT_LINES = 5;

/** How the note of an instance's last output begins in its status_reason. */
export const OUTPUT_NOTE = '; its last output: ';

/** A tenant's text with its control characters (C0, DEL, C1) as spaces: it reaches reasons, events, logs and terminals. */
export const withoutControls = (text: string) => text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');

/** `; its last output: a ⏎ b` (control characters out, at most 600 characters), or '' for none. */
export function lastOutputNote(lines: string[]): string {
  const text = lines.map((l) => withoutControls(l).trim()).filter((l) => l !== '').join(' ⏎ ');
  if (text === '') return '';
  return `${OUTPUT_NOTE}${text.length > 600 ? `…${text.slice(-600)}` : text}`;
}

/**
 * Container lifecycle: database row first (with its event, same transaction), then Docker, then
 * the row again. Stop and delete are graceful: the container leaves the route table, every live
 * proxy acknowledges the new table and drains its in-flight requests (bounded), then Docker
 * stops it.
 */
export class ContainerService {
  readonly locks = new KeyedMutex();
  /** images whose min_instances the quota cut short (warned once) */
  private readonly quotaShort = new Set<number>();
  private readonly log: Logger;

  constructor(private readonly d: ContainerServiceDeps) {
    this.log = d.log.child({ component: 'containers' });
  }

  private eventFor(type: string, c: ContainerRow, img: Pick<ImageRow, 'app_hostname'>, extra: Record<string, unknown> = {}) {
    return {
      type, userId: c.user_id, imageId: c.image_id, containerId: c.id, appHostname: img.app_hostname,
      payload: { container_name: c.name, docker_id: c.docker_id, host_port: c.host_port, internal_port: c.internal_port, status: c.status, health: c.health, ...extra },
    };
  }

  /** Something the route table depends on changed outside this service (events and tables follow). */
  routesChanged(): void {
    this.changed();
  }

  private changed(): void {
    this.d.events.nudge();
    this.d.hub.schedule();
  }

  labels(c: Pick<ContainerRow, 'id' | 'user_id' | 'image_id'>, img: ImageRow): Record<string, string> {
    return {
      'berth.managed': 'true',
      'berth.user': String(c.user_id),
      'berth.image': String(c.image_id),
      'berth.container': String(c.id),
      'berth.app_hostname': img.app_hostname,
      'berth.cluster': this.d.clusterId,
    };
  }

  /**
   * Create `count` containers of an image (409 when the image is not ready or the count would
   * pass max_instances). Rows and `container.created` events commit first; then each container
   * is created and started in Docker. Containers Docker refuses are marked failed (the reconcile
   * loop retries them); when none started, the rows are deleted again (with container.deleted,
   * in one transaction) and the Docker error is the API error, so a client can simply retry.
   *
   * `provision` (the reconcile loop): create the image's `min_instances` containers once, if not
   * done yet (at least `atLeast`, at most `atMost`), and set `min_instances_provisioned` in the same transaction;
   * count is ignored.
   * Those rows are kept as `failed` when Docker refuses them (the loop retries with backoff).
   */
  async create(userId: number, imageId: number, count: number, opts: { cap?: boolean; provision?: boolean; atLeast?: number; atMost?: number } = {}): Promise<ContainerRow[]> {
    const { img, rows } = await withTransaction(this.d.db, async (tx) => {
      const room = await this.containerRoom(tx, userId);
      const { rows: [img] } = await tx.query<ImageRow>('SELECT * FROM images WHERE id = $1 AND user_id = $2 FOR UPDATE', [imageId, userId]);
      if (!img) throw notFound('image');
      if (img.status !== 'ready') throw conflict(`image ${img.id} is ${img.status}, not ready: containers can only run built images`, 'image_not_ready');
      const { rows: [{ n, stopped }] } = await tx.query<{ n: number; stopped: number }>(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE desired = 'stopped')::int AS stopped FROM containers
          WHERE image_id = $1 AND status_reason IS DISTINCT FROM $2`, [img.id, DELETING]);
      let want = count;
      if (opts.provision) {
        if (img.min_instances_provisioned) return { img, rows: [] as ContainerRow[] };
        // min_instances past the user's container quota: as many as fit (the rest is logged).
        // Counted: instances wanted running (a revision that got its traffic back may still be
        // draining the ones it had; those are on their way out).
        const { rows: [{ n: wanted }] } = await tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM containers WHERE image_id = $1 AND desired = 'running'`, [img.id]);
        // (`atLeast`: a revision being proven before it takes the traffic runs one; apps/repo.ts provingSql)
        // (`atMost`: one proven outside the split runs one, whatever its floor: apps/repo.ts provingAsideSql)
        want = Math.max(0, Math.min(Math.max(img.min_instances, opts.atLeast ?? 0), img.max_instances, opts.atMost ?? Infinity) - wanted);
        // none, or only some, can be made now: said on the revision (with how many can run), since
        // when; cleared once they can be. One none of whose instances runs is given up on past the
        // start deadline (apps/start-failure.ts); one with some serves with them meanwhile
        const short = want > Math.max(0, room);
        const blocked = !short ? null
          : wanted === 0 && room <= 0 ? `the per-user container quota is full: ${this.quotaError(room).message}`
          : `the per-user container quota is full: ${wanted + Math.max(0, room)} of its ${wanted + want} instances can run; ${this.quotaError(Math.min(0, room)).message}`;
        await tx.query(
          `UPDATE images SET start_blocked = $2, start_blocked_at = CASE WHEN $2::text IS NULL THEN NULL ELSE COALESCE(start_blocked_at, now()) END
            WHERE id = $1 AND start_blocked IS DISTINCT FROM $2::text`, [img.id, blocked]);
        if (want > Math.max(0, room)) {
          // As many as fit now; the image stays owed the rest, and the reconcile loop tries again
          // (a rollout frees the old revision's share of the quota as it retires it).
          if (!this.quotaShort.has(img.id)) this.log.warn({ userId, imageId: img.id, wanted: want, quota: this.d.config.quotas.containers }, 'min_instances capped by the per-user container quota for now');
          this.quotaShort.add(img.id);
          want = Math.max(0, room);
        } else {
          this.quotaShort.delete(img.id);
          await tx.query('UPDATE images SET min_instances_provisioned = true WHERE id = $1', [img.id]);
        }
      } else if (n + count > img.max_instances) {
        if (!opts.cap) {
          // (stopped ones count: the autoscaler starts them again before it makes new ones)
          const hint = stopped > 0 ? ` (${stopped} of them stopped: POST /api/containers/:id/start starts one)` : '';
          throw conflict(`image ${img.id} has ${n} of max_instances ${img.max_instances} containers${hint}; ${count} more would pass it`, 'max_instances_exceeded');
        }
        want = Math.max(0, img.max_instances - n);
      }
      if (!opts.provision && want > Math.max(0, room)) {
        if (!opts.cap) throw this.quotaError(room);
        want = Math.max(0, room);
      }
      const out: ContainerRow[] = [];
      for (let i = 0; i < want; i++) {
        const { rows: [c] } = await tx.query<ContainerRow>(
          `INSERT INTO containers (user_id, image_id, name, status, health, internal_port, desired)
           VALUES ($1, $2, $3, 'creating', 'unknown', $4, 'running') RETURNING *`,
          [img.user_id, img.id, containerName(), img.container_port]);
        await recordEvent(tx, this.eventFor('container.created', c, img));
        out.push(c);
      }
      return { img, rows: out };
    });
    if (rows.length) this.changed();
    const results = await Promise.allSettled(rows.map((c) => this.locks.run(c.id, () => this.launch(c, img))));
    const ok = results.filter((r): r is PromiseFulfilledResult<ContainerRow> => r.status === 'fulfilled').map((r) => r.value);
    if (rows.length && ok.length === 0) {
      const err = (results[0] as PromiseRejectedResult).reason;
      if (!opts.provision) await this.discard(rows.map((r) => r.id), img, (err as Error).message);
      throw dockerApiError(err);
    }
    const { rows: fresh } = await this.d.db.query<ContainerRow>('SELECT * FROM containers WHERE id = ANY($1::bigint[]) ORDER BY id', [rows.map((r) => r.id)]);
    return fresh;
  }

  /**
   * How many more containers the user may have that should run (per-user quota; below zero when
   * a lowered quota is already passed, so the refusal says what the user has). Locks the user
   * row (FOR NO KEY UPDATE) for the caller's transaction, so concurrent creates and starts of
   * one user are counted one after the other.
   */
  private async containerRoom(tx: DbClient, userId: number): Promise<number> {
    await tx.query('SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE', [userId]);
    return this.roomNow(userId, tx);
  }

  /** How many more containers the user may have that should run, read now (without containerRoom's lock: a hint, as for a wake's quick refusal). */
  async roomNow(userId: number, q: Queryable = this.d.db): Promise<number> {
    const { rows: [{ n }] } = await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM containers WHERE user_id = $1 AND desired = 'running'`, [userId]);
    return this.d.config.quotas.containers - n;
  }

  private quotaError(room: number): ApiError {
    const max = this.d.config.quotas.containers;
    return conflict(`you have ${max - room} running container(s) of the ${max} allowed; stop or delete some first`, 'container_quota_exceeded');
  }

  /** Delete the rows of a create that Docker refused entirely (container.deleted each), one transaction. */
  private async discard(ids: number[], img: ImageRow, reason: string): Promise<void> {
    await withTransaction(this.d.db, async (tx) => {
      const { rows } = await tx.query<ContainerRow>('DELETE FROM containers WHERE id = ANY($1::bigint[]) RETURNING *', [ids]);
      for (const c of rows) await recordEvent(tx, this.eventFor('container.deleted', c, img, { reason: `create failed: ${reason}` }));
    });
    this.changed();
  }

  /**
   * Create and start the Docker container of a `creating` row; the row becomes `running`
   * (health unknown until the first check passes) or `failed` with the reason.
   */
  private async launch(c: ContainerRow, img: ImageRow): Promise<ContainerRow> {
    let dockerId: string | null = null;
    try {
      dockerId = await this.d.runtime.create({
        // the image id recorded by the build, never a tag (a name resolves to whatever carries it now)
        name: c.name!, image: img.docker_image_id ?? img.docker_image, labels: this.labels(c, img),
        env: containerEnv(img), containerPort: img.container_port, publishHost: this.d.config.publishHost,
        ...this.limits(img),
        pidsLimit: this.d.config.containerPidsLimit,
      });
      await this.d.db.query('UPDATE containers SET docker_id = $2, updated_at = now() WHERE id = $1', [c.id, dockerId]);
      await this.d.runtime.start(dockerId);
      return await this.markStarted(c.id, dockerId, img);
    } catch (e) {
      let reason = (e as Error).message;
      // the app's own words on why it stopped, before its container goes (with it, its log)
      if (e instanceof ExitedAtOnce && dockerId) reason += lastOutputNote(await this.d.runtime.lastLines(dockerId, EXIT_OUTPUT_LINES).catch(() => []));
      this.log.warn({ containerId: c.id, err: reason }, 'container failed to start');
      if (dockerId) await this.d.runtime.remove(dockerId).catch(() => {});
      // the app's own failure (it exited at once, or its command cannot be run) counts; Docker's does not
      const own = e instanceof ExitedAtOnce || CANNOT_EXEC.test(reason);
      await withTransaction(this.d.db, async (tx) => {
        const { rows: [row] } = await tx.query<ContainerRow>(
          `UPDATE containers SET status = 'failed', health = 'unknown', status_reason = $2, docker_id = NULL, host_port = NULL,
             stopped_at = now(), updated_at = now(), app_exits = app_exits + $3::int, last_exit = CASE WHEN $3::int > 0 THEN $2 ELSE last_exit END
           WHERE id = $1 RETURNING *`, [c.id, reason, own ? 1 : 0]);
        if (row) await recordEvent(tx, this.eventFor('container.failed', row, img, { reason }));
        await closeUsage(tx, c.id, `failed: ${reason}`);
      });
      this.changed();
      throw e;
    }
  }

  /** After `docker start`: read the published port, mark running, write container.started. */
  private async markStarted(id: number, dockerId: string, img: ImageRow): Promise<ContainerRow> {
    const st = await this.d.runtime.inspect(dockerId, img.container_port);
    if (!st) throw new ContainerRuntimeError(`container ${dockerId.slice(0, 12)} vanished right after it started`);
    if (!st.running) throw new ExitedAtOnce(`container exited at once (exit code ${st.exitCode}${st.oomKilled ? ', out of memory' : signalNote(st.exitCode)})`);
    if (!st.hostPort) throw new ContainerRuntimeError(`Docker published no host port for ${img.container_port}/tcp`);
    const row = await withTransaction(this.d.db, async (tx) => {
      const { rows: [row] } = await tx.query<ContainerRow>(
        `UPDATE containers SET status = 'running', health = 'unknown', status_reason = NULL, docker_id = $2, host_port = $3,
           container_ip = $4, exit_code = NULL, started_at = COALESCE($5::timestamptz, now()), stopped_at = NULL, updated_at = now()
         WHERE id = $1 RETURNING *`, [id, dockerId, st.hostPort, st.ip, dockerTime(st.startedAt)]);
      if (!row) throw new ContainerRuntimeError(`container ${id} was deleted while starting`);
      await recordEvent(tx, this.eventFor('container.started', row, img));
      // a usage record per run (billing), opened with the state change
      await openUsage(tx, row, img, this.d.config.containerMemoryDefaultBytes, st);
      return row;
    });
    this.changed();
    this.d.onStarted?.(row);
    this.log.info({ containerId: id, dockerId: dockerId.slice(0, 12), hostPort: st.hostPort }, 'container running');
    return row;
  }

  /**
   * Take a container out of every proxy's table, then wait (bounded by drainTimeoutMs) until
   * every live proxy acknowledges that table and has no request in flight to it.
   */
  async drain(c: ContainerRow): Promise<void> {
    if (c.host_port === null) return;
    const address = endpointAddress(this.d.config.endpointHost, c.host_port);
    // (its app's routes read again: not every app's)
    const { rows: [img] } = await this.d.db.query<{ app_hostname: string }>('SELECT app_hostname FROM images WHERE id = $1', [c.image_id]);
    const version = await this.d.hub.refresh(img === undefined ? undefined : [img.app_hostname]);
    const r = await this.d.proxies.waitDrained(version, address, this.d.config.drainTimeoutMs);
    if (r.proxies === 0 && this.d.hub.subscriberCount > 0) {
      // proxies are subscribed but none reports: give them the grace period to apply and drain
      await new Promise((res) => setTimeout(res, this.d.config.drainGraceMs * 2));
    }
    // When drained, every proxy acked the table and reports no request in flight to the address
    // (proxies keep reporting a removed endpoint as "draining" until it is idle): no extra wait.
    this.log.info({ containerId: c.id, address, version, ...r }, r.drained ? 'proxies drained the container' : 'drain timed out; stopping anyway');
  }

  /** Graceful stop (409 when already stopped). */
  async stop(userId: number, id: number, reason: 'api' | 'autoscale' = 'api'): Promise<ContainerRow> {
    const first = await getContainer(this.d.db, userId, id);
    if (!first) throw notFound('container');
    return this.locks.run(id, async () => {
      const c = await getContainer(this.d.db, userId, id);
      if (!c) throw notFound('container');
      if (c.desired === 'stopped' && (c.status === 'stopped' || c.status === 'stopping' || c.status === 'exited' || c.status === 'failed')) {
        throw conflict(`container ${id} is already ${c.status}`, 'already_stopped');
      }
      return this.stopLocked(c, reason);
    });
  }

  /** Stop with the row lock held: stopping → drain → docker stop → stopped + container.stopped. */
  async stopLocked(c: ContainerRow, reason: string): Promise<ContainerRow> {
    const img = await imageOf(this.d.db, c);
    // its user's stop is marked from the moment it is no longer wanted running: the autoscaler
    // takes such instances out of the app's floor, and while this one drained (seconds) it saw the
    // floor one short and started another instance behind the user's back. A user's stop that
    // something else finishes (the reconcile loop, after a crash or a failed Docker stop) keeps it.
    const mark = reason === 'api' || (c.desired === 'stopped' && c.status_reason === USER_STOPPED) ? USER_STOPPED : null;
    await this.d.db.query(
      `UPDATE containers SET desired = 'stopped', status = CASE WHEN status = 'running' THEN 'stopping' ELSE status END, status_reason = $2, updated_at = now() WHERE id = $1`,
      [c.id, mark]);
    if (c.status === 'running') await this.drain(c);
    if (c.docker_id) {
      try { await this.d.runtime.stop(c.docker_id, this.d.config.stopTimeoutSec); } catch (e) { throw dockerApiError(e); }
    }
    const row = await withTransaction(this.d.db, async (tx) => {
      const { rows: [row] } = await tx.query<ContainerRow>(
        `UPDATE containers SET status = 'stopped', health = 'unknown', desired = 'stopped', host_port = NULL, container_ip = NULL,
           status_reason = $2, stopped_at = now(), updated_at = now() WHERE id = $1 RETURNING *`, [c.id, mark]);
      if (row) await recordEvent(tx, this.eventFor('container.stopped', { ...row, host_port: c.host_port }, img, { reason }));
      await closeUsage(tx, c.id, `stopped (${reason})`);
      return row;
    });
    this.changed();
    return row;
  }

  /** Start a stopped (or failed) container (409 when already running or starting). */
  async start(userId: number, id: number): Promise<ContainerRow> {
    const first = await getContainer(this.d.db, userId, id);
    if (!first) throw notFound('container');
    return this.locks.run(id, async () => {
      const c = await getContainer(this.d.db, userId, id);
      if (!c) throw notFound('container');
      if (c.status === 'running' || c.status === 'creating' || (c.status === 'stopping' && c.desired === 'running')) {
        throw conflict(`container ${id} is already ${c.status}`, 'already_running');
      }
      const img = await imageOf(this.d.db, c);
      if (img.status !== 'ready') throw conflict(`image ${img.id} is ${img.status}`, 'image_not_ready');
      await withTransaction(this.d.db, async (tx) => {
        if (c.desired !== 'running') {
          const room = await this.containerRoom(tx, userId);
          if (room < 1) throw this.quotaError(room);
        }
        await tx.query(`UPDATE containers SET desired = 'running', status = 'creating', status_reason = NULL, updated_at = now() WHERE id = $1`, [c.id]);
      });
      try {
        // a container made before berth isolated containers (another network), or with other
        // limits than the image has now (PATCHed since), is made afresh: it runs, and is billed
        // (billing/usage.ts, from the image), with what the image says
        const prev = c.docker_id ? await this.d.runtime.inspect(c.docker_id) : null;
        if (c.docker_id && prev && prev.network === this.d.runtime.network && this.sameLimits(prev, img)) {
          try {
            await this.d.runtime.start(c.docker_id);
            return await this.markStarted(c.id, c.docker_id, img);
          } catch (e) {
            if (e instanceof DockerUnavailableError) throw e;
            // the old container cannot run again (port taken, exited at once...): make a new one
            await this.d.runtime.remove(c.docker_id).catch(() => {});
          }
        } else if (c.docker_id && prev) {
          await this.d.runtime.remove(c.docker_id);
        }
        const fresh = await this.renew(c, img);
        return await this.launch(fresh, img);
      } catch (e) {
        if (e instanceof ApiError) throw e;
        // launch() marks its own failures; anything before it (Docker away during inspect/start)
        // must not leave the row `creating`
        await this.markFailed(c.id, img, (e as Error).message);
        throw dockerApiError(e);
      }
    });
  }

  /** Was a container made with the CPU and memory the image has now? */
  private sameLimits(st: ContainerState, img: ImageRow): boolean {
    const l = this.limits(img);
    return st.nanoCpus === Math.round(l.cpus * 1e9) && st.memoryBytes === (l.memoryBytes || 0);
  }

  /** The CPU and memory a container of `img` is made with (and billed for: billing/usage.ts). */
  private limits(img: ImageRow): { cpus: number; memoryBytes: number } {
    return instanceSize(img, this.d.config.containerMemoryDefaultBytes);
  }

  /** A `creating` row whose start failed before launch() → failed + container.failed (the reconcile loop retries). */
  private async markFailed(id: number, img: ImageRow, reason: string): Promise<void> {
    await withTransaction(this.d.db, async (tx) => {
      const { rows: [row] } = await tx.query<ContainerRow>(
        `UPDATE containers SET status = 'failed', health = 'unknown', status_reason = $2, stopped_at = now(), updated_at = now()
          WHERE id = $1 AND status = 'creating' RETURNING *`, [id, reason]);
      if (row) await recordEvent(tx, this.eventFor('container.failed', row, img, { reason }));
      await closeUsage(tx, id, `failed: ${reason}`);
    });
    this.changed();
  }

  /** A new Docker name for a row whose old container is gone or unusable. */
  private async renew(c: ContainerRow, img: ImageRow, q: Queryable = this.d.db): Promise<ContainerRow> {
    const { rows: [row] } = await q.query<ContainerRow>(
      `UPDATE containers SET name = $2, docker_id = NULL, host_port = NULL, container_ip = NULL, status = 'creating', health = 'unknown',
         updated_at = now() WHERE id = $1 RETURNING *`, [c.id, containerName()]);
    if (!row) throw notFound('container');
    return row;
  }

  /** Graceful delete: drain, remove from Docker, delete the row with container.deleted. */
  async remove(userId: number, id: number): Promise<void> {
    const first = await getContainer(this.d.db, userId, id);
    if (!first) throw notFound('container');
    await this.locks.run(id, async () => {
      const c = await getContainer(this.d.db, userId, id);
      if (!c) throw notFound('container');
      await this.removeLocked(c, 'api');
    });
  }

  async removeLocked(c: ContainerRow, reason: string): Promise<void> {
    const img = await imageOf(this.d.db, c);
    await this.d.db.query(`UPDATE containers SET desired = 'stopped', status = CASE WHEN status = 'running' THEN 'stopping' ELSE status END, status_reason = $2, updated_at = now() WHERE id = $1`, [c.id, DELETING]);
    if (c.status === 'running') await this.drain(c);
    if (c.docker_id) {
      try {
        if (c.status === 'running') await this.d.runtime.stop(c.docker_id, this.d.config.stopTimeoutSec);
        await this.d.runtime.remove(c.docker_id);
      } catch (e) { throw dockerApiError(e); }
    }
    await withTransaction(this.d.db, async (tx) => {
      const res = await tx.query('DELETE FROM containers WHERE id = $1', [c.id]);
      if (res.rowCount) await recordEvent(tx, this.eventFor('container.deleted', c, img, { reason }));
      await closeUsage(tx, c.id, `deleted (${reason})`);
    });
    this.changed();
  }

  /**
   * Reconcile: the container of a row that should run died (exited, OOM, killed, vanished).
   * Records container.stopped (with the exit code), then replaces it with a fresh Docker
   * container under the same row id (container.replaced, then container.started).
   */
  async markDied(c: ContainerRow, why: { reason: string; exitCode: number | null }): Promise<ContainerRow | undefined> {
    const img = await imageOf(this.d.db, c);
    // the app's own exit (not a container removed behind berth's back) counts, with its last words
    // while its container is still there (apps/start-failure.ts gives a revision that never served up)
    const own = why.reason !== VANISHED;
    const lastExit = own ? why.reason + (c.docker_id ? lastOutputNote(await this.d.runtime.lastLines(c.docker_id, EXIT_OUTPUT_LINES).catch(() => [])) : '') : null;
    const row = await withTransaction(this.d.db, async (tx) => {
      const { rows: [row] } = await tx.query<ContainerRow>(
        `UPDATE containers SET status = 'exited', health = 'unknown', exit_code = $2, status_reason = $3, stopped_at = now(), updated_at = now(),
           app_exits = app_exits + $4::int, last_exit = COALESCE($5, last_exit)
         WHERE id = $1 AND status = 'running' RETURNING *`, [c.id, why.exitCode, why.reason, own ? 1 : 0, lastExit]);
      if (row) {
        await recordEvent(tx, this.eventFor('container.stopped', { ...row, host_port: c.host_port }, img, { reason: why.reason, exit_code: why.exitCode, unexpected: true }));
        await closeUsage(tx, c.id, `crashed: ${why.reason}`);
      }
      return row;
    });
    if (row) this.changed();
    return row;
  }

  /** Replace the Docker container of a row that should be running (lock held by the caller). */
  async replaceLocked(c: ContainerRow, reason: string): Promise<ContainerRow> {
    const img = await imageOf(this.d.db, c);
    if (c.docker_id) await this.d.runtime.remove(c.docker_id);
    const fresh = await withTransaction(this.d.db, async (tx: DbClient) => {
      const row = await this.renew(c, img, tx);
      await tx.query('UPDATE containers SET restart_count = restart_count + 1 WHERE id = $1', [c.id]);
      await recordEvent(tx, this.eventFor('container.replaced', row, img, { reason, old_docker_id: c.docker_id, old_name: c.name, old_host_port: c.host_port, exit_code: c.exit_code }));
      return { ...row, restart_count: row.restart_count + 1 };
    });
    this.changed();
    this.log.warn({ containerId: c.id, reason, oldDockerId: c.docker_id?.slice(0, 12) }, 'replacing container');
    return this.launch(fresh, img);
  }

  /** Reconcile: a `stopping` row left behind by a crashed control plane → finish the stop. */
  async finishStop(c: ContainerRow): Promise<void> {
    await this.stopLocked(c, 'recovered');
  }

  /**
   * Reconcile: the Docker container of a running row was restarted outside berth (`docker
   * restart`, daemon restart): its host port, address or start time changed. The row takes the
   * new ones with health `unknown` (out of the table until probed healthy again on the new port)
   * and a container.started event, in one transaction; the route table is rebuilt.
   */
  async noteRestarted(c: ContainerRow, st: Pick<ContainerState, 'dockerId' | 'hostPort' | 'ip' | 'startedAt' | 'nanoCpus' | 'memoryBytes'>): Promise<ContainerRow | undefined> {
    const img = await imageOf(this.d.db, c);
    const row = await withTransaction(this.d.db, async (tx) => {
      const { rows: [row] } = await tx.query<ContainerRow>(
        `UPDATE containers SET host_port = $3, container_ip = $4, started_at = COALESCE($5::timestamptz, now()), health = 'unknown',
           status_reason = NULL, updated_at = now()
         WHERE id = $1 AND docker_id = $2 AND status = 'running' RETURNING *`, [c.id, st.dockerId, st.hostPort, st.ip, dockerTime(st.startedAt)]);
      if (row) {
        await recordEvent(tx, this.eventFor('container.started', row, img, { reason: 'restarted outside berth', old_host_port: c.host_port }));
        await openUsage(tx, row, img, this.d.config.containerMemoryDefaultBytes, st); // closes the previous run's record
      }
      return row;
    });
    if (row) {
      this.changed();
      this.d.onStarted?.(row);
      this.log.warn({ containerId: c.id, oldHostPort: c.host_port, hostPort: st.hostPort }, 'container was restarted outside berth; new address adopted');
    }
    return row;
  }

  /**
   * Health transitions from the checker: update + event in one transaction, only on change, and
   * only while the row still has the host port that was probed (a probe of an earlier incarnation
   * must never mark a new one, possibly reachable at someone else's old port, healthy).
   */
  async setHealth(id: number, health: 'healthy' | 'unhealthy', detail: string, probedPort?: number): Promise<ContainerRow | undefined> {
    const row = await withTransaction(this.d.db, async (tx) => {
      const { rows: [row] } = await tx.query<ContainerRow>(
        `UPDATE containers SET health = $2, health_checked_at = now(), status_reason = $3,
           healthy_at = CASE WHEN $2 = 'healthy' THEN now() ELSE healthy_at END, updated_at = now()
         WHERE id = $1 AND status = 'running' AND health <> $2 AND ($4::int IS NULL OR host_port = $4) RETURNING *`,
        [id, health, health === 'healthy' ? null : detail, probedPort ?? null]);
      if (!row) return undefined;
      const { rows: [img] } = await tx.query<ImageRow>('SELECT app_hostname FROM images WHERE id = $1', [row.image_id]);
      await recordEvent(tx, this.eventFor(`container.${health}`, row, img, { detail }));
      // the revision can take traffic from now on (`latest` moves to it; see apps/traffic.ts)
      // (not once given up on: apps/start-failure.ts; its instances are on their way out)
      if (health === 'healthy') await tx.query('UPDATE images SET routable_at = now() WHERE id = $1 AND routable_at IS NULL AND start_failed_at IS NULL', [row.image_id]);
      return row;
    });
    if (row) {
      this.changed();
      this.log.info({ containerId: id, health, detail }, `container ${health}`);
    }
    return row;
  }
}
