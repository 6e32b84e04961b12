import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { request } from 'undici';
import type { Logger } from '../../shared/logging.js';
import { Ajv } from 'ajv';
import { METERING_PATH, addEntry, meterUploadSchema, mergeBatches, type MeterAck, type MeterBatch, type MeterEntry } from '../../shared/metering/schema.js';

/** Batches kept while the control plane is away (~10 min of busy seconds); past it the oldest fresh ones are merged. */
export const MAX_BATCHES = 600;
/**
 * Entries (route × endpoint pairs) kept in all, whatever the batches: past it too the oldest fresh
 * batches are merged. The outbox is written out whole: 600 batches of a busy proxy's 500 pairs were
 * 64 MB of JSON (a second of the serving thread per write), and a few thousand pairs past V8's
 * string limit, which wedged metering for good.
 */
export const MAX_ENTRIES = 100_000;
/** Batches per upload, and entries (route × endpoint pairs) per upload: bodies stay a few MB at most. */
export const UPLOAD_BATCHES = 60;
export const UPLOAD_ENTRIES = 20_000;

interface Saved {
  stream: string;
  nextSeq: number;
  batches: MeterBatch[];
}

/** Sum entries of the same route/endpoint (several worker threads report the same pairs). */
export function combineEntries(entries: MeterEntry[]): MeterEntry[] {
  const by = new Map<string, MeterEntry>();
  for (const e of entries) {
    const k = `${e.route}\n${e.endpoint}`;
    const m = by.get(k);
    if (m === undefined) by.set(k, e);
    else addEntry(m, e);
  }
  return [...by.values()];
}

/**
 * The proxy's metering outbox: batches numbered in one stream, kept on disk
 * (`<data-dir>/proxy-metering.json`) before they are first sent and until the control plane
 * acknowledges them, so neither a control plane that is away nor a proxy restart loses counts.
 *
 * Bounded: past MAX_BATCHES the two oldest batches that were never part of an upload are merged
 * into one (the newer seq). A batch that was uploaded without an answer may already be applied,
 * so it is never merged (merging it into a later seq would count it twice) — only batches above
 * `sentThrough` are; after a restart every loaded batch counts as sent.
 */
export class MeterOutbox {
  private sentThrough: number;
  private mergedAway = 0;

  private constructor(private readonly file: string, readonly stream: string, private nextSeq: number, readonly batches: MeterBatch[]) {
    this.sentThrough = nextSeq - 1;
  }

  static async open(file: string, log: Logger): Promise<MeterOutbox> {
    try {
      const s = JSON.parse(await readFile(file, 'utf8')) as Saved;
      if (typeof s.stream === 'string' && Number.isSafeInteger(s.nextSeq) && Array.isArray(s.batches) && s.batches.every((b) => validBatch(b))) {
        if (s.batches.length) log.info({ stream: s.stream, batches: s.batches.length }, 'metering: unsent batches from before the restart will be delivered');
        return new MeterOutbox(file, s.stream, s.nextSeq, s.batches);
      }
      log.warn({ file }, 'metering outbox file is not valid; starting a new stream');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ file, err: (e as Error).message }, 'metering outbox file unreadable; starting a new stream');
    }
    const stream = `${hostname().replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 60)}-${randomBytes(6).toString('hex')}`;
    const box = new MeterOutbox(file, stream, 1, []);
    await box.save();
    return box;
  }

  get pending(): number {
    return this.batches.length;
  }

  /** Entries in all the batches kept. */
  get entries(): number {
    let n = 0;
    for (const b of this.batches) n += b.entries.length;
    return n;
  }

  /** A new batch of what happened in [from, to] (nothing when every entry is empty). */
  add(entries: MeterEntry[], from: number, to: number): boolean {
    if (entries.length === 0) return false;
    this.batches.push({ seq: this.nextSeq++, from, to, entries: combineEntries(entries) });
    this.dirty = true;
    let total = this.entries;
    while (this.batches.length > MAX_BATCHES || total > MAX_ENTRIES) {
      const i = this.batches.findIndex((b) => b.seq > this.sentThrough);
      if (i < 0 || i + 1 >= this.batches.length) break;
      const before = this.batches[i].entries.length + this.batches[i + 1].entries.length;
      const merged = mergeBatches([this.batches[i], this.batches[i + 1]]);
      this.batches.splice(i, 2, merged);
      this.mergedAway++;
      total -= before - merged.entries.length;
    }
    return true;
  }

  /** Batches merged since the last call (for a log line). */
  takeMerged(): number {
    const n = this.mergedAway;
    this.mergedAway = 0;
    return n;
  }

  /** The next upload (oldest first, at most `maxBatches`); marks them as possibly applied. */
  nextUpload(maxBatches = UPLOAD_BATCHES): MeterBatch[] {
    let n = 0;
    let entries = 0;
    while (n < this.batches.length && n < maxBatches && (n === 0 || entries + this.batches[n].entries.length <= UPLOAD_ENTRIES)) {
      entries += this.batches[n].entries.length;
      n++;
    }
    const up = this.batches.slice(0, n);
    if (up.length) this.sentThrough = Math.max(this.sentThrough, up[up.length - 1].seq);
    return up;
  }

  /** The control plane refused this batch for good (400): it is dropped, never resent. */
  drop(seq: number): MeterBatch | undefined {
    const i = this.batches.findIndex((b) => b.seq === seq);
    return i < 0 ? undefined : this.batches.splice(i, 1)[0];
  }

  /** The control plane applied everything up to `acked`. */
  ack(acked: number): boolean {
    let n = 0;
    while (n < this.batches.length && this.batches[n].seq <= acked) n++;
    if (n) this.batches.splice(0, n);
    return n > 0;
  }

  private saving: Promise<void> = Promise.resolve();
  /** batches added or removed since the last save */
  dirty = false;
  lastSaveAt = 0;

  /** Write the outbox atomically (serialised). */
  save(): Promise<void> {
    const text = JSON.stringify({ stream: this.stream, nextSeq: this.nextSeq, batches: this.batches } satisfies Saved);
    this.dirty = false;
    this.lastSaveAt = Date.now();
    this.saving = this.saving.catch(() => {}).then(() => writeFileAtomic(this.file, text)).catch((e: unknown) => {
      // not on disk: the next tick tries again, not only the next change
      this.dirty = true;
      throw e;
    });
    return this.saving;
  }
}

/**
 * Every `intervalMs`: take the data plane's metering deltas into a new batch, persist it, then
 * upload what is pending (several uploads per tick while a backlog drains). A batch is on disk
 * before it is ever sent, so a seq is never reused.
 */
export class MeterReporter {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private lastTo = Date.now();
  private failures = 0;
  /** After a 400 for a multi-batch upload: send one batch at a time to find the refused one. */
  private isolating = false;
  /** Batches the control plane refused (400) and that were dropped. */
  refused = 0;
  lastError: string | null = null;

  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    readonly outbox: MeterOutbox,
    private readonly drain: () => Promise<MeterEntry[]>,
    private readonly logger: Logger,
    private readonly intervalMs = 1000,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** One collect + deliver round (concurrent calls share the running one). */
  tick(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.round().finally(() => { this.running = null; });
    return this.running;
  }

  private async round(final?: MeterEntry[]): Promise<void> {
    try {
      const entries = final ?? (await this.drain());
      const to = Math.max(Date.now(), this.lastTo); // a clock stepping back never makes from > to
      if (this.outbox.add(entries, this.lastTo, to)) {
        const merged = this.outbox.takeMerged();
        if (merged) this.logger.warn({ merged, pending: this.outbox.pending }, 'metering outbox full: oldest unsent batches merged (counts kept, minute resolution lost)');
      }
      this.lastTo = to;
    } catch (e) {
      this.logger.error({ err: (e as Error).message }, 'metering: could not record a batch');
      return;
    }
    // back off while the control plane is away: try every tick for 5 failures, then every 5th
    const uploading = !(this.failures >= 5 && this.failures++ % 5 !== 0);
    // on disk before it is ever sent (a seq is never reused); while the control plane is away the
    // whole outbox is written every 5 s at most, not every second
    if (this.outbox.dirty && (uploading || final !== undefined || Date.now() - this.outbox.lastSaveAt >= 5000)) {
      try {
        await this.outbox.save();
      } catch (e) {
        // (sent anyway: a disk that cannot be written must not stop metering; a crash before the
        // next good write could reuse a seq, which the control plane drops — those counts only)
        this.logger.error({ err: (e as Error).message }, 'metering: could not write the outbox');
      }
    }
    if (!uploading) return;
    for (let i = 0; i < 50 && this.outbox.pending > 0; i++) {
      if (!(await this.upload())) break;
    }
  }

  private async upload(): Promise<boolean> {
    let batches: MeterBatch[] = [];
    try {
      batches = this.outbox.nextUpload(this.isolating ? 1 : UPLOAD_BATCHES);
      const res = await request(new URL(METERING_PATH, this.baseUrl), {
        method: 'POST',
        headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ stream: this.outbox.stream, batches }),
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      const text = await res.body.text();
      if (res.statusCode === 400) return await this.refusedUpload(batches, text);
      if (res.statusCode !== 200) {
        this.failures++;
        this.lastError = `HTTP ${res.statusCode}`;
        if (res.statusCode !== 404) this.logger.warn({ status: res.statusCode, body: text.slice(0, 300) }, 'control plane refused metering batches (kept, will retry)');
        return false;
      }
      const ack = JSON.parse(text) as MeterAck;
      this.failures = 0;
      this.isolating = false;
      this.lastError = null;
      if (this.outbox.ack(ack.acked)) await this.outbox.save();
      return true;
    } catch (e) {
      this.failures++;
      this.lastError = (e as Error).message;
      this.logger.debug({ err: this.lastError, pending: this.outbox.pending }, 'metering batches not delivered (kept, will retry)');
      return false;
    }
  }

  /**
   * 400: the control plane will refuse these batches however often they are sent (a time it
   * cannot accept, counts past its bounds). Resending would wedge the outbox behind them, so: an
   * upload of several batches is retried one batch at a time, and a single refused batch is
   * dropped (logged as an error with what it counted). The stream goes on with the next seq.
   */
  private async refusedUpload(batches: MeterBatch[], text: string): Promise<boolean> {
    this.lastError = 'HTTP 400';
    if (batches.length > 1) {
      this.isolating = true;
      this.logger.warn({ batches: batches.length, body: text.slice(0, 300) }, 'control plane refused a metering upload (400); sending its batches one at a time');
      return true;
    }
    const b = batches[0];
    if (b && this.outbox.drop(b.seq)) {
      this.refused++;
      const requests = b.entries.reduce((s, e) => s + e.requests, 0);
      this.logger.error({ seq: b.seq, from: b.from, to: b.to, requests, body: text.slice(0, 300) }, 'control plane refused a metering batch (400); dropped (its counts are lost)');
      await this.outbox.save();
    }
    return true;
  }

  /** Stop the timer and wait for a round in progress (before the data plane closes). */
  async halt(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.running) await this.running.catch(() => {});
  }

  /**
   * On shutdown: a last batch, persisted, one delivery attempt. `final`: the data plane's last
   * counts when it cannot be drained any more (worker threads that have exited hand them over).
   */
  async flush(final?: MeterEntry[]): Promise<void> {
    await this.halt();
    this.failures = 0;
    await this.round(final);
    await this.outbox.save().catch(() => {});
  }
}

/** A batch as the outbox writes it, by the schema the control plane checks uploads with (a file edited or corrupted otherwise starts a new stream). */
const validBatch = new Ajv({ allErrors: false, strict: false }).compile<MeterBatch>(meterUploadSchema.properties.batches.items);
