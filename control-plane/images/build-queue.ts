import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { Logger } from '../../shared/logging.js';
import { isTransientPgError, withTransaction, type Db } from '../db/pool.js';
import { recordEvent, type EventRelay } from '../events/outbox.js';
import type { Metrics } from '../http/metrics.js';
import type { Runtime } from '../runtime/docker.js';
import { withRetry } from '../runtime/retry.js';
import { BuildLog } from './build-log.js';
import type { ImageRow } from './repo.js';

export const buildDir = (dataDir: string, userId: number, imageId: number) => join(dataDir, 'builds', String(userId), String(imageId));
export const contextDir = (dataDir: string, userId: number, imageId: number) => join(buildDir(dataDir, userId, imageId), 'context');

/** How often a control plane says its queued and running builds are alive. */
export const BUILD_HEARTBEAT_S = 5;
/** Another control plane's `building` row without a heartbeat this long is recovered. */
export const BUILD_STALE_AFTER_S = 30;

export interface BuildQueueOptions {
  db: Db;
  runtime: Runtime;
  events: EventRelay;
  metrics: Metrics;
  log: Logger;
  dataDir: string;
  concurrency: number;
  maxLogBytes: number;
  timeoutMs: number;
  /** what each build's steps may use (null: no limit) */
  memoryBytes?: number | null;
  cpus?: number | null;
  pids?: number | null;
  diskBytes?: number | null;
  minFreeBytes?: number | null;
  /**
   * Runs before each build with the build context in place; throwing fails the build with that
   * reason (app.ts: the Dockerfile policy and the ownership of every image the build reads).
   */
  verify?: (img: ImageRow, contextDir: string, o: { onOutput: (text: string) => void; signal: AbortSignal }) => Promise<void>;
  /** Attempts and first backoff for database bookkeeping on transient errors (defaults 6 / 250 ms). */
  dbAttempts?: number;
  dbRetryBaseMs?: number;
}

/**
 * Runs image builds in the background, at most `concurrency` at once, in FIFO order.
 * Each build: claim the row, stream output into a BuildLog (persisted every second), then in one
 * transaction set ready/build_failed and write the matching event.
 */
export class BuildQueue {
  private waiting: number[] = [];
  private running = new Map<number, { abort: AbortController; done: Promise<void> }>();
  private logs = new Map<number, BuildLog>();
  private closed = false;
  private beats: NodeJS.Timeout | undefined;
  /**
   * Who builds: this data directory (host:path), where the contexts are. Stable across restarts,
   * so a restarted control plane recovers its own leftovers at once; another control plane's
   * builds only when their heartbeats stop (BUILD_STALE_AFTER_S).
   */
  readonly runner: string;

  constructor(private readonly o: BuildQueueOptions) {
    this.runner = `${hostname()}:${resolve(o.dataDir)}`;
  }

  /** Live log of a queued or running build in this process. */
  liveLog(imageId: number): BuildLog | undefined {
    return this.logs.get(imageId);
  }

  enqueue(imageId: number): void {
    if (this.closed || this.logs.has(imageId)) return;
    this.logs.set(imageId, new BuildLog(this.o.maxLogBytes, 'berth: build queued\n'));
    this.waiting.push(imageId);
    this.o.metrics.buildsQueued.set(this.waiting.length);
    this.pump();
  }

  /** Abort a queued or running build (image deleted); resolves when it has stopped. */
  async cancel(imageId: number, reason: string): Promise<void> {
    const i = this.waiting.indexOf(imageId);
    if (i !== -1) {
      this.waiting.splice(i, 1);
      this.o.metrics.buildsQueued.set(this.waiting.length);
      this.logs.get(imageId)?.end('cancelled');
      this.logs.delete(imageId);
    }
    const r = this.running.get(imageId);
    if (r) {
      r.abort.abort(reason);
      await r.done;
    }
  }

  /**
   * Builds nobody is building any more: this data directory's from before a restart, and other
   * control planes' whose heartbeats stopped (or rows from before heartbeats). Each is claimed
   * (one control plane wins it), then queued again when its context is here and it never
   * started, else marked build_failed with the reason in its logs. At start, then with every
   * heartbeat; the heartbeats themselves start here.
   */
  async recover(): Promise<{ failed: number; requeued: number }> {
    const r = await this.sweep(true);
    if (!this.beats && !this.closed) {
      this.beats = setInterval(() => {
        void this.beat().catch((e: Error) => this.o.log.warn({ err: e.message }, 'build heartbeat failed'));
      }, BUILD_HEARTBEAT_S * 1000);
      this.beats.unref();
    }
    return r;
  }

  /** Refresh this control plane's queued and running builds, then recover stale ones. */
  private async beat(): Promise<void> {
    const mine = [...this.waiting, ...this.running.keys()];
    if (mine.length) {
      await this.o.db.query(`UPDATE images SET build_heartbeat_at = now() WHERE id = ANY($1::bigint[]) AND status = 'building' AND build_runner = $2`, [mine, this.runner]);
    }
    await this.sweep(false);
  }

  private async sweep(atStart: boolean): Promise<{ failed: number; requeued: number }> {
    const busy = new Set([...this.waiting, ...this.running.keys()]);
    // claimed in one statement: of several control planes sweeping at once, one gets each row
    const { rows } = await this.o.db.query<ImageRow>(
      `UPDATE images SET build_runner = $1, build_heartbeat_at = now()
        WHERE status = 'building' AND NOT (id = ANY($4::bigint[]))
          AND (build_runner IS NULL OR build_heartbeat_at IS NULL OR build_heartbeat_at < now() - make_interval(secs => $2)
               OR ($3::boolean AND build_runner = $1))
        RETURNING *`, [this.runner, BUILD_STALE_AFTER_S, atStart, [...busy]]);
    rows.sort((a, b) => Number(a.id) - Number(b.id));
    let failed = 0;
    let requeued = 0;
    for (const img of rows) {
      const ctx = contextDir(this.o.dataDir, img.user_id, img.id);
      if (img.build_started_at === null && existsSync(join(ctx, 'Dockerfile'))) {
        this.enqueue(img.id);
        requeued++;
        continue;
      }
      const reason = img.build_started_at === null
        ? 'build context is missing after a control plane restart; upload the source again'
        : 'build was interrupted by a control plane restart; upload the source again to rebuild';
      const logs = `${img.build_logs}${img.build_logs && !img.build_logs.endsWith('\n') ? '\n' : ''}berth: BUILD FAILED: ${reason}\n`;
      if (await this.finish(img.id, 'build_failed', reason, null, logs, img.build_logs_truncated, { recovered: true })) failed++;
    }
    if (failed || requeued) this.o.log.warn({ failed, requeued }, 'recovered builds nobody was building (this data directory before a restart, or a control plane whose heartbeats stopped)');
    return { failed, requeued };
  }

  /** Stop taking work, abort running builds (they are marked build_failed), wait for them. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.beats);
    for (const id of this.waiting) this.logs.get(id)?.end('building');
    this.waiting = [];
    const all = [...this.running.values()];
    for (const r of all) r.abort.abort('control plane shutting down');
    await Promise.all(all.map((r) => r.done));
  }

  get stats() {
    return { running: this.running.size, queued: this.waiting.length };
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.o.concurrency && this.waiting.length) {
      const id = this.waiting.shift()!;
      this.o.metrics.buildsQueued.set(this.waiting.length);
      const abort = new AbortController();
      const done = this.run(id, abort).catch((e) => this.o.log.error({ err: e, imageId: id }, 'build bookkeeping failed')).finally(() => {
        this.running.delete(id);
        this.logs.delete(id);
        this.o.metrics.buildsRunning.set(this.running.size);
        this.pump();
      });
      this.running.set(id, { abort, done });
      this.o.metrics.buildsRunning.set(this.running.size);
    }
  }

  /** Database bookkeeping of a build: transient Postgres errors are retried with backoff. */
  private db<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return withRetry(fn, {
      attempts: this.o.dbAttempts ?? 6,
      baseMs: this.o.dbRetryBaseMs ?? 250,
      maxMs: 4000,
      isTransient: isTransientPgError,
      onRetry: (e, attempt, delayMs) => this.o.log.warn({ err: (e as Error).message, attempt, delayMs: Math.round(delayMs) }, `build bookkeeping: ${what} failed; retrying`),
    });
  }

  private async run(imageId: number, abort: AbortController): Promise<void> {
    const log = this.logs.get(imageId)!;
    // whatever happens below, followers get an end: the build result, or build_failed when
    // even the bookkeeping could not run (the row is then settled by restart recovery)
    let endStatus = 'build_failed';
    try {
      const { rows } = await this.db('claim', () => this.o.db.query<ImageRow>(
        `UPDATE images SET build_started_at = now(), updated_at = now() WHERE id = $1 AND status = 'building' RETURNING *`, [imageId]));
      const img = rows[0];
      if (!img) { endStatus = 'cancelled'; return; }
      const blog = this.o.log.child({ imageId, userId: img.user_id });
      const started = Date.now();
      log.append(`berth: building ${img.docker_image} (Docker at ${this.o.runtime.endpoint})\n`);
      const flush = setInterval(() => {
        if (!log.dirty) return;
        log.dirty = false;
        this.o.db.query(`UPDATE images SET build_logs = $2, build_logs_truncated = $3 WHERE id = $1 AND status = 'building'`, [imageId, log.text(), log.truncated])
          .catch((e) => blog.warn({ err: e }, 'could not store build logs'));
      }, 1000);
      const timeout = setTimeout(() => abort.abort(`build timed out after ${Math.round(this.o.timeoutMs / 1000)}s`), this.o.timeoutMs);
      let status: 'ready' | 'build_failed';
      let reason: string | null = null;
      let dockerId: string | null = null;
      try {
        await this.o.verify?.(img, contextDir(this.o.dataDir, img.user_id, img.id), { onOutput: (t) => log.append(t), signal: abort.signal });
        const res = await this.o.runtime.buildImage({
          contextDir: contextDir(this.o.dataDir, img.user_id, img.id),
          tag: img.docker_image,
          labels: { 'berth.managed': 'true', 'berth.user': String(img.user_id), 'berth.image': String(img.id), 'berth.app_hostname': img.app_hostname },
          onOutput: (t) => log.append(t),
          signal: abort.signal,
          memoryBytes: this.o.memoryBytes,
          cpus: this.o.cpus,
          pids: this.o.pids,
          diskBytes: this.o.diskBytes,
          minFreeBytes: this.o.minFreeBytes,
        });
        dockerId = res.imageId;
        status = 'ready';
        log.append(`berth: build succeeded: ${img.docker_image} (${dockerId})\n`);
      } catch (e) {
        status = 'build_failed';
        reason = abort.signal.aborted && typeof abort.signal.reason === 'string' ? `build aborted: ${abort.signal.reason}` : (e as Error).message;
        log.append(`berth: BUILD FAILED: ${reason}\n`);
      } finally {
        clearInterval(flush);
        clearTimeout(timeout);
      }
      const secs = (Date.now() - started) / 1000;
      this.o.metrics.builds.inc({ result: status });
      this.o.metrics.buildDuration.observe({ result: status }, secs);
      let stored: boolean;
      try {
        stored = await this.db('finish', () => this.finish(imageId, status, reason, dockerId, log.text(), log.truncated, { duration_ms: Math.round(secs * 1000) }));
      } catch (e) {
        log.append(`berth: could not record the build result (${(e as Error).message}); it will be marked failed when the control plane restarts\n`);
        throw e;
      }
      endStatus = status;
      if (!stored && dockerId) {
        // deleted while building: do not leave the image behind
        await this.o.runtime.removeImage(img.docker_image).catch(() => {});
      }
      // a built image has what it needs from its context (up to the archive limit, per image):
      // the disk goes back (a failed build's stays, to look at until the image is deleted)
      if (stored && status === 'ready') {
        await rm(contextDir(this.o.dataDir, img.user_id, img.id), { recursive: true, force: true })
          .catch((e) => blog.warn({ err: (e as Error).message }, 'could not remove the build context of a built image'));
      }
      blog.info({ status, reason, seconds: secs }, 'build finished');
    } finally {
      if (log.ended === undefined) log.end(endStatus);
    }
  }

  /** building → ready | build_failed with its event, in one transaction. False when the row is gone or no longer building. */
  private async finish(imageId: number, status: 'ready' | 'build_failed', reason: string | null, dockerId: string | null, logs: string, truncated: boolean, payload: Record<string, unknown>): Promise<boolean> {
    const ok = await withTransaction(this.o.db, async (c) => {
      const { rows } = await c.query<ImageRow>(
        `UPDATE images SET status = $2, status_reason = $3, docker_image_id = $4, build_logs = $5, build_logs_truncated = $6,
           build_finished_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'building' RETURNING *`, [imageId, status, reason, dockerId, logs, truncated]);
      const img = rows[0];
      if (!img) {
        // a retry after a COMMIT whose answer was lost: the result is already there
        const { rows: cur } = await c.query<Pick<ImageRow, 'status' | 'docker_image_id'>>('SELECT status, docker_image_id FROM images WHERE id = $1', [imageId]);
        return cur[0]?.status === status && cur[0].docker_image_id === dockerId;
      }
      await recordEvent(c, {
        type: status === 'ready' ? 'image.ready' : 'image.build_failed',
        userId: img.user_id, imageId: img.id, appHostname: img.app_hostname,
        payload: { status, reason, docker_image: img.docker_image, docker_image_id: dockerId, ...payload },
      });
      return true;
    });
    if (ok) this.o.events.nudge();
    return ok;
  }
}
