/**
 * The workload engine: an open-model HTTP/1.1 load generator.
 *
 * Open model, coordinated omission corrected (as wrk2): every request has an intended start time
 * from the pattern's schedule (patterns.ts), fixed before the run, whatever the server does. Its
 * latency is measured from that intended time to the end of the response, so a server that stalls
 * shows the stall in the percentiles instead of slowing the sender down. A request that goes out
 * more than `lateThresholdMs` after its intended time is `late` (the generator could not keep up:
 * no free connection, or its own event loop was busy); one that waited for a connection longer than
 * the timeout, or found `maxPending` already waiting, is `dropped` and never sent.
 *
 * The client is the proxy's own upstream connection (proxy/upstream/connection.ts): a pre-built
 * request head per write, responses parsed in place off one shared read buffer (proxy/upstream/response-parser.ts), one request
 * at a time per keep-alive connection (no pipelining). Connections open on demand — when a request
 * is due, none is idle, and the busy ones are held up (no response for 2 ms) — up to a cap sized from the peak rate (peak × 1 s, 32…4000: enough to keep the
 * schedule through a one-second stall at modest rates), or exactly `connections` when forced.
 *
 * Timing: below PRECISE_FROM_RPS the loop sleeps on 1 ms timers between sends (a send leaves up to
 * ~1 ms after its intended start, which counts in its latency; the process stays nearly idle at low
 * rates). From that rate on, or with `precise`, a timer wakes the loop ~1.5 ms early and setImmediate
 * spins until the start is due, so sends leave within a fraction of a millisecond of it (at the
 * price of a whole core).
 * Latencies go into HDR histograms (whole run, and one per second for the series).
 */
import { performance } from 'node:perf_hooks';
import { UpstreamConnection, type ConnectionOwner, type UpstreamError, type UpstreamHandler } from '../../proxy/upstream/connection.js';
import type { ResponseHead } from '../../proxy/upstream/response-parser.js';
import { createSchedule, expectedRequests, meanRate, peakRate, type PatternSpec, type Schedule } from './patterns.js';
import { prepareRequest, type PreparedRequest, type RequestSpec } from './request.js';
import { latencySummary, newHistogram, percentileMs, type SeriesPoint, type WorkloadMetrics } from './metrics.js';

export interface WorkloadOptions extends PatternSpec, RequestSpec {
  /** force this many keep-alive connections (opened at the start, never more) */
  connections?: number;
  /** per request: no response head (or a body stalled) this long after sending → `timeout` (default 10 s) */
  timeout_ms?: number;
  /** sent this much after the intended start → late (default 10 ms) */
  lateThresholdMs?: number;
  /** most requests waiting for a connection (default 100,000) */
  maxPending?: number;
  /** shown in the metrics (the API sets the app hostnames) */
  app_hostnames?: string[];
  /** random source for poisson (tests) */
  random?: () => number;
  /**
   * Sub-millisecond send timing: spin the event loop (setImmediate) through the last ~1.5 ms before
   * each send instead of sleeping on a 1 ms timer. Costs a whole core whatever the rate. Default: on
   * when the pattern peaks at ≥ PRECISE_FROM_RPS (the loop is busy there anyway), off below.
   */
  precise?: boolean;
}

/** What a live view sees once per second. */
export interface Progress {
  elapsed_s: number;
  duration_s: number;
  point: SeriesPoint;
  total_requests: number;
  completed: number;
  errors: number;
  late: number;
  dropped: number;
  in_flight: number;
  connections: number;
  /** whole-run percentiles so far */
  p50_ms: number | null;
  p99_ms: number | null;
}

export const DEFAULT_TIMEOUT_MS = 10_000;
/** Waiting requests get new connections once no response came for this long (ms). */
const GROW_AFTER_MS = 2;
/** Most sends per turn of the event loop. */
const MAX_BATCH = 256;
/** Connections being opened at once (opening thousands at once costs more than it gains). */
const MAX_CONNECTING = 32;
export const DEFAULT_LATE_MS = 10;
/** From this peak rate on, sends are timed by spinning (sub-ms); below it by 1 ms timers. */
export const PRECISE_FROM_RPS = 5000;

/** The connection cap when none is forced: peak rate × 1 s, between 32 and 4000. */
export function autoConnectionCap(peakRps: number): number {
  return Math.min(4000, Math.max(32, Math.ceil(peakRps)));
}

function errorKind(e: Error & { code?: string }): string {
  const c = e.code ?? '';
  if (c === 'UPSTREAM_HEADERS_TIMEOUT' || c === 'UPSTREAM_BODY_TIMEOUT' || c === 'UPSTREAM_CONNECT_TIMEOUT') return 'timeout';
  if (c === 'UPSTREAM_CLOSED' || c === 'UPSTREAM_STALE_CONNECTION') return 'closed';
  if (c.startsWith('HPE_')) return 'protocol_error';
  return c || 'error';
}

/** One keep-alive connection and the request it carries. */
class Slot implements ConnectionOwner, UpstreamHandler {
  readonly host: string;
  readonly port: number;
  connectTimeoutMs: number;
  readonly conn: UpstreamConnection;
  intended = 0;
  sentAt = 0;
  status = 0;
  busy = false;
  // UpstreamHandler (the head changes when several hosts take turns)
  upstreamHead: string;
  readonly headRequest: boolean;
  readonly hasBody: boolean;
  readonly headersTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** one request per connection at a time: the generator measures requests, not pipelines */
  readonly pipeline = 1;
  readonly pipelineGroup = '';

  constructor(private readonly run: WorkloadRun, req: PreparedRequest, timeoutMs: number) {
    this.host = req.hostname;
    this.port = req.port;
    this.connectTimeoutMs = Math.min(timeoutMs, 10_000);
    this.upstreamHead = req.head;
    this.headRequest = req.method === 'HEAD';
    this.hasBody = req.body !== null;
    this.headersTimeoutMs = timeoutMs;
    this.idleTimeoutMs = timeoutMs;
    this.conn = new UpstreamConnection(this);
  }

  send(intended: number, now: number, head: string): void {
    this.upstreamHead = head;
    this.intended = intended;
    this.sentAt = now;
    this.status = 0;
    this.busy = true;
    this.conn.start(this);
  }

  // ConnectionOwner
  connected(): void { this.run.slotConnected(this); }
  connectFailed(_c: UpstreamConnection, err: UpstreamError): void { this.run.slotConnectFailed(this, err); }
  released(): void { this.run.slotReady(this); }
  closed(): void { this.run.slotClosed(this); }

  // UpstreamHandler
  onUpstreamStart(conn: UpstreamConnection): void {
    const body = this.run.body;
    if (body !== null) {
      conn.writeBody(body, false);
      conn.endBody(false);
    }
  }
  onUpstreamHead(head: ResponseHead): void { this.status = head.status; }
  readonly headPending = false;
  flushHead(): void {}
  onUpstreamData(chunk: Uint8Array): boolean {
    this.run.bytesReceived += chunk.length;
    return true;
  }
  onUpstreamEnd(): void {
    this.busy = false;
    this.run.completed(this.intended, this.status);
  }
  onUpstreamError(err: UpstreamError): void {
    if (!this.busy) return;
    this.busy = false;
    this.run.failed(this.intended, errorKind(err));
  }
  /** (counting the failure threw: there is no client to let go; the slot is no longer busy) */
  abandon(): void {
    this.busy = false;
  }
  onUpstreamDrain(): void {}
  onPipelineStall(): void {}
}

/**
 * One run. `start()` resolves with the final metrics when the schedule is done and every request
 * has an outcome (or `stop()` was called). `onProgress` is called once per second.
 */
export class WorkloadRun {
  readonly body: Buffer | null;
  bytesReceived = 0;
  private readonly req: PreparedRequest;
  private readonly schedule: Schedule;
  private readonly timeoutMs: number;
  private readonly lateMs: number;
  private readonly maxPending: number;
  private readonly cap: number;
  private readonly forced: boolean;
  private readonly spin: boolean;
  private readonly idle: Slot[] = [];
  private readonly slots = new Set<Slot>();
  private connecting = 0;
  private connectionsOpened = 0;
  private connectionsMax = 0;
  // requests waiting for a connection: their intended start times (FIFO)
  private pending: number[] = [];
  private pendingHead = 0;
  private nextAt = 0;
  private t0 = 0;
  private startWall = Date.now();
  private scheduleDone = false;
  private stopped = false;
  private finished = false;
  private inFlight = 0;
  // totals
  private scheduled = 0;
  private sent = 0;
  private ok = 0;
  private failedCount = 0;
  private late = 0;
  private dropped = 0;
  private readonly statuses = new Map<number, number>();
  private readonly errorKinds = new Map<string, number>();
  private readonly hist = newHistogram();
  /** intended start → sent (the generator's own timing, part of every latency) */
  private readonly sendHist = newHistogram();
  // the current second
  private sec = 0;
  private secHist = newHistogram();
  private secDone = 0;
  private secErrors = 0;
  private secSent = 0;
  private secLate = 0;
  private secDropped = 0;
  private readonly series: SeriesPoint[] = [];
  private timer: NodeJS.Timeout | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private resolveDone: ((m: WorkloadMetrics) => void) | null = null;
  private lastProgressSec = -1;
  private lastCompletion = -Infinity;
  private growTimer: NodeJS.Timeout | null = null;
  private readonly regrow = (): void => {
    // timers run before the loop reads sockets: look after this turn's responses are in
    setImmediate(() => {
      this.growTimer = null;
      if (!this.finished && !this.stopped) this.grow(this.now());
    });
  };
  private warming = false;
  private onWarm: (() => void) | null = null;
  onProgress: ((p: Progress) => void) | null = null;

  constructor(private readonly o: WorkloadOptions) {
    this.req = prepareRequest(o);
    this.body = this.req.body;
    this.schedule = createSchedule(o, o.random);
    this.timeoutMs = o.timeout_ms ?? DEFAULT_TIMEOUT_MS;
    this.lateMs = o.lateThresholdMs ?? DEFAULT_LATE_MS;
    this.maxPending = o.maxPending ?? 100_000;
    this.forced = o.connections !== undefined;
    this.cap = o.connections ?? autoConnectionCap(peakRate(o));
    this.spin = o.precise ?? peakRate(o) >= PRECISE_FROM_RPS;
  }

  /**
   * Run to the end; resolves with the final metrics. The first connections (all forced ones, or
   * peak rate ÷ 1000 up to 32) are opened before the clock starts, so the first requests do not
   * pay for the handshake.
   */
  start(): Promise<WorkloadMetrics> {
    return new Promise((resolve) => {
      this.resolveDone = resolve;
      const warm = this.forced ? this.cap : Math.min(this.cap, MAX_CONNECTING, Math.max(1, Math.ceil(peakRate(this.o) / 1000)));
      for (let i = 0; i < warm; i++) this.open();
      this.warming = true;
      const begin = () => {
        // (stopped or finished while warming: a ticker started now would keep the thread alive)
        if (!this.warming || this.stopped || this.finished) return;
        this.warming = false;
        this.startWall = Date.now();
        this.t0 = performance.now();
        this.nextAt = this.schedule.next();
        this.ticker = setInterval(() => this.housekeeping(), 100);
        this.loop();
      };
      this.onWarm = begin;
      setTimeout(begin, 1000).unref();
      if (this.connecting === 0) begin();
    });
  }

  /** Stop sending; requests in flight get up to 2 s to finish. */
  stop(): void {
    if (this.stopped || this.finished) return;
    this.stopped = true;
    this.scheduleDone = true;
    this.nextAt = Infinity;
    this.pending = [];
    this.pendingHead = 0;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    setTimeout(() => this.finish(), 2000).unref();
    this.maybeFinish();
  }

  private now(): number {
    return performance.now() - this.t0;
  }

  private readonly loop = (): void => {
    this.timer = null;
    if (this.scheduleDone) return;
    const now = this.now();
    // after a stall (GC, a busy machine) many sends are due at once: send a batch, then let the
    // loop read responses (which frees connections) before the next batch, instead of opening a
    // connection for each of thousands of overdue requests
    let batch = MAX_BATCH;
    while (this.nextAt <= now && batch-- > 0) {
      this.issue(this.nextAt, now);
      this.nextAt = this.schedule.next();
    }
    if (this.nextAt === Infinity) {
      this.scheduleDone = true;
      this.maybeFinish();
      return;
    }
    this.grow(now);
    if (batch < 0) {
      setImmediate(this.loop);
      return;
    }
    const wait = this.nextAt - this.now();
    if (this.spin) {
      if (wait > 2) this.timer = setTimeout(this.loop, wait - 1.5);
      else setImmediate(this.loop);
    } else this.timer = setTimeout(this.loop, Math.floor(wait));
  };

  private issue(intended: number, now: number): void {
    this.scheduled++;
    this.rollTo(now);
    if (this.pending.length - this.pendingHead >= this.maxPending) {
      this.drop();
      return;
    }
    const s = this.pendingHead === this.pending.length ? this.idle.pop() : undefined;
    if (s !== undefined) {
      this.sendOn(s, intended, now);
      return;
    }
    this.pending.push(intended);
    this.grow(now);
  }

  /**
   * More connections for the requests waiting, one per waiting request beyond those connecting —
   * but only when the ones there are really held up: no response for GROW_AFTER_MS. While
   * responses keep coming, a busy connection frees within a round trip,
   * and opening one per momentarily waiting request (hundreds at high rates) costs more CPU than
   * it saves.
   */
  private grow(now: number): void {
    const waiting = this.pending.length - this.pendingHead;
    if (waiting === 0 || this.slots.size >= this.cap || this.connecting >= Math.min(MAX_CONNECTING, waiting)) return;
    // (not "a request waited that long": after a pause of this process, overdue requests look old
    // although the connections are cycling fine — the responses are read first, then sends resume)
    if (now - this.lastCompletion < GROW_AFTER_MS) {
      // look again then, whatever the schedule does meanwhile
      if (this.growTimer === null) this.growTimer = setTimeout(this.regrow, GROW_AFTER_MS);
      return;
    }
    while (this.slots.size < this.cap && this.connecting < Math.min(MAX_CONNECTING, waiting)) this.open();
  }

  private sendOn(s: Slot, intended: number, now: number): void {
    this.sent++;
    this.secSent++;
    this.inFlight++;
    const delay = now - intended;
    if (delay > this.lateMs) {
      this.late++;
      this.secLate++;
    }
    this.sendHist.recordValue(delay < 0.001 ? 1 : Math.round(delay * 1000));
    const heads = this.req.heads;
    s.send(intended, now, heads.length === 1 ? heads[0] : heads[this.sent % heads.length]);
  }

  private drop(): void {
    this.dropped++;
    this.secDropped++;
    this.failedCount++;
    this.secErrors++;
    this.errorKinds.set('dropped', (this.errorKinds.get('dropped') ?? 0) + 1);
  }

  private open(): void {
    const s = new Slot(this, this.req, this.timeoutMs);
    this.slots.add(s);
    this.connecting++;
    this.connectionsOpened++;
    if (this.slots.size > this.connectionsMax) this.connectionsMax = this.slots.size;
  }

  slotConnected(s: Slot): void {
    this.connecting--;
    if (this.warming) {
      this.idle.push(s);
      if (this.connecting === 0) this.onWarm?.();
      return;
    }
    this.slotReady(s);
  }

  /** A connection is free (new or after a response). */
  slotReady(s: Slot): void {
    if (!this.slots.has(s)) return;
    if (this.pendingHead < this.pending.length && !this.stopped) {
      const intended = this.pending[this.pendingHead++];
      if (this.pendingHead > 4096 && this.pendingHead * 2 > this.pending.length) {
        this.pending = this.pending.slice(this.pendingHead);
        this.pendingHead = 0;
      }
      this.sendOn(s, intended, this.now());
      return;
    }
    this.idle.push(s);
    if (this.stopped || this.scheduleDone) this.maybeFinish();
  }

  slotConnectFailed(s: Slot, err: UpstreamError): void {
    this.connecting--;
    this.slots.delete(s);
    if (this.warming) {
      if (this.connecting === 0) this.onWarm?.();
      return;
    }
    // a connection that cannot be made fails one waiting request with the reason (so a refused
    // target shows errors at the schedule's rate instead of a silent queue)
    if (this.pendingHead < this.pending.length) {
      const intended = this.pending[this.pendingHead++];
      this.sent++;
      this.secSent++;
      this.failed(intended, errorKind(err), false);
    }
    this.refill();
  }

  slotClosed(s: Slot): void {
    this.slots.delete(s);
    const i = this.idle.indexOf(s);
    if (i !== -1) this.idle.splice(i, 1);
    this.refill();
  }

  /** Keep enough connections opening for the requests waiting (and the forced count). */
  private refill(): void {
    if (this.finished) return;
    if (this.stopped) {
      this.maybeFinish();
      return;
    }
    if (Math.min(MAX_CONNECTING, this.pending.length - this.pendingHead) > this.connecting && this.slots.size < this.cap) this.open();
    this.maybeFinish();
  }

  completed(intended: number, status: number): void {
    this.inFlight--;
    const now = this.now();
    this.lastCompletion = now;
    this.rollTo(now);
    const us = Math.max(1, Math.round((now - intended) * 1000));
    this.hist.recordValue(us);
    this.secHist.recordValue(us);
    this.secDone++;
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
    if (status >= 400) {
      this.failedCount++;
      this.secErrors++;
    } else this.ok++;
  }

  failed(_intended: number, kind: string, wasInFlight = true): void {
    if (wasInFlight) this.inFlight--;
    this.lastCompletion = this.now();
    this.rollTo(this.lastCompletion);
    this.secDone++;
    this.failedCount++;
    this.secErrors++;
    this.errorKinds.set(kind, (this.errorKinds.get(kind) ?? 0) + 1);
  }

  /** Every 100 ms: drop requests that waited too long, close the second, report progress. */
  private housekeeping(): void {
    const now = this.now();
    while (this.pendingHead < this.pending.length && now - this.pending[this.pendingHead] > this.timeoutMs) {
      this.pendingHead++;
      this.drop();
    }
    this.rollTo(now);
    if (this.scheduleDone) {
      this.maybeFinish();
      // in-flight requests past their timeout are failed by the connection sweep; this is the backstop
      if (!this.finished && now > this.o.duration_seconds * 1000 + this.timeoutMs + 2000) this.finish();
    }
  }

  /** Close seconds up to the one `now` falls in. */
  private rollTo(now: number): void {
    // responses that arrive after the schedule's end belong to its last second (no trailing
    // near-empty point with a target of 0)
    const sec = Math.min(Math.floor(now / 1000), Math.ceil(this.o.duration_seconds) - 1);
    while (this.sec < sec) this.closeSecond();
  }

  private closeSecond(): void {
    const t = this.sec;
    const D = this.o.duration_seconds;
    const span = Math.max(0, Math.min(t + 1, D) - t);
    const point: SeriesPoint = {
      t,
      target_rps: span > 0 ? round1(meanRate(this.o, t, t + span) * span) : 0,
      achieved_rps: this.secDone,
      p50_ms: percentileMs(this.secHist, 50),
      p99_ms: percentileMs(this.secHist, 99),
      errors: this.secErrors,
      sent: this.secSent,
      late: this.secLate,
      dropped: this.secDropped,
    };
    this.series.push(point);
    this.secHist.reset();
    this.secDone = this.secErrors = this.secSent = this.secLate = this.secDropped = 0;
    this.sec++;
    if (this.onProgress !== null && t > this.lastProgressSec) {
      this.lastProgressSec = t;
      this.onProgress(this.progress(point));
    }
  }

  private progress(point: SeriesPoint): Progress {
    return {
      elapsed_s: point.t + 1,
      duration_s: this.o.duration_seconds,
      point,
      total_requests: this.sent + this.dropped,
      completed: this.ok + this.failedCount - this.dropped,
      errors: this.failedCount,
      late: this.late,
      dropped: this.dropped,
      in_flight: this.inFlight,
      connections: this.slots.size,
      p50_ms: percentileMs(this.hist, 50),
      p99_ms: percentileMs(this.hist, 99),
    };
  }

  private maybeFinish(): void {
    if (this.finished || !this.scheduleDone) return;
    if (this.inFlight > 0 || (!this.stopped && this.pendingHead < this.pending.length)) return;
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.warming = false;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.ticker !== null) clearInterval(this.ticker);
    if (this.growTimer !== null) clearTimeout(this.growTimer);
    const end = this.now();
    // requests never sent when stopped are not counted; those still waiting at a timeout are dropped
    if (!this.stopped) while (this.pendingHead < this.pending.length) { this.pendingHead++; this.drop(); }
    const lost = this.inFlight;
    for (const s of this.slots) {
      if (s.busy) {
        s.busy = false;
        this.failedCount++;
        this.errorKinds.set(this.stopped ? 'stopped' : 'timeout', (this.errorKinds.get(this.stopped ? 'stopped' : 'timeout') ?? 0) + 1);
      }
      s.conn.abort(s);
    }
    this.inFlight -= lost;
    // the last (partial) second, when anything happened in it
    if (this.secDone + this.secSent + this.secErrors + this.secDropped > 0 || this.series.length === 0 || (!this.stopped && this.sec < Math.ceil(this.o.duration_seconds))) this.closeSecond();
    const m = this.metrics(end);
    this.resolveDone?.(m);
  }

  /** The metrics so far (while running: the series up to the last whole second). */
  snapshot(): WorkloadMetrics {
    return this.metrics(this.warming ? 0 : this.now());
  }

  private metrics(end: number): WorkloadMetrics {
    const durationS = Math.max(end / 1000, 0.001);
    const total = this.sent + this.dropped;
    const completedCount = this.ok + this.failedCount - this.dropped;
    const statuses: Record<string, number> = {};
    for (const [k, v] of [...this.statuses].sort((a, b) => a[0] - b[0])) statuses[String(k)] = v;
    const errors: Record<string, number> = {};
    for (const [k, v] of this.errorKinds) errors[k] = v;
    const runS = this.stopped || !this.finished ? durationS : Math.max(durationS, this.o.duration_seconds);
    const lat = latencySummary(this.hist);
    return {
      total_requests: total,
      successful_requests: this.ok,
      failed_requests: this.failedCount,
      error_rate: total > 0 ? Math.round((this.failedCount / total) * 10000) / 100 : 0,
      requests_per_second: round1(completedCount / runS),
      target_rps: round1(this.scheduledTarget()),
      avg_latency_ms: lat.avg_latency_ms,
      min_latency_ms: lat.min_latency_ms,
      max_latency_ms: lat.max_latency_ms,
      p50_latency_ms: lat.p50_latency_ms,
      p90_latency_ms: lat.p90_latency_ms,
      p95_latency_ms: lat.p95_latency_ms,
      p99_latency_ms: lat.p99_latency_ms,
      p999_latency_ms: lat.p999_latency_ms,
      status_code_distribution: statuses,
      errors,
      late_requests: this.late,
      dropped_requests: this.dropped,
      start_time: new Date(this.startWall).toISOString(),
      end_time: new Date(this.startWall + end).toISOString(),
      duration_seconds: Math.round(durationS * 1000) / 1000,
      app_hostnames: this.o.app_hostnames ?? [],
      series: this.series,
      scheduled_requests: this.scheduled,
      latency_distribution: lat.latency_distribution,
      connections_opened: this.connectionsOpened,
      connections_max: this.connectionsMax,
      bytes_received: this.bytesReceived,
      late_threshold_ms: this.lateMs,
      send_delay_p50_ms: percentileMs(this.sendHist, 50),
      send_delay_p99_ms: percentileMs(this.sendHist, 99),
      send_delay_max_ms: this.sendHist.totalCount === 0 ? null : Math.round(this.sendHist.maxValue) / 1000,
      stopped: this.stopped,
    };
  }

  /** (computed once: for a long many-stage pattern it is seconds × stages of work, and a snapshot is taken every second) */
  private target = -1;
  private scheduledTarget(): number {
    if (this.target < 0) this.target = expectedRequests(this.o) / this.o.duration_seconds;
    return this.target;
  }
}

const round1 = (n: number) => Math.round(n * 10) / 10;

/** Run a workload to the end (library entry point). */
export function runWorkload(o: WorkloadOptions, onProgress?: (p: Progress) => void): { done: Promise<WorkloadMetrics>; stop(): void } {
  const r = new WorkloadRun(o);
  if (onProgress) r.onProgress = onProgress;
  return { done: r.start(), stop: () => r.stop() };
}
