import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { DockerUnavailableError, type Runtime } from './docker.js';
import { isTransientDockerError } from './retry.js';

/**
 * A container's stdout/stderr from Docker, as lines. Docker multiplexes both streams of a
 * non-TTY container into frames (8-byte header: stream type, 3 zero bytes, big-endian length);
 * `LogLines` undoes the framing and the line splitting, so a line cut across frames or chunks
 * comes out whole. The Docker response is always a stream (dockerode buffers the whole log when
 * not following; we never do): memory is one partial line per stream.
 *
 * Every open stream is counted (`openLogStreams()`); `close()` destroys the Docker response, which
 * is what ends a follow. Callers close when their client goes away.
 */

export interface LogLine {
  stream: 'stdout' | 'stderr';
  /** RFC 3339 with nanoseconds, as Docker stamps it */
  time: string;
  text: string;
}

export interface LogOptions {
  follow: boolean;
  /** last N lines; undefined = all */
  tail?: number;
  /** unix seconds (may be fractional) */
  since?: number;
}

export interface LogStream {
  /** called for each complete line; return false to ask for a pause (resume() continues) */
  onLine(fn: (l: LogLine) => void): void;
  onEnd(fn: (err?: Error) => void): void;
  pause(): void;
  resume(): void;
  close(): void;
}

let open = 0;
/** Docker log streams currently open in this process (tests check none outlive their client). */
export const openLogStreams = (): number => open;

/** A long line is cut here (Docker's json-file driver already splits at 16 KiB). */
const MAX_LINE = 64 * 1024;

export async function containerLogs(runtime: Runtime, dockerId: string, o: LogOptions): Promise<LogStream | null> {
  const modem = runtime.docker.modem as unknown as {
    dial(opts: object, cb: (err: Error | null, data: unknown) => void): void;
  };
  const options: Record<string, string | number | boolean> = { follow: o.follow, stdout: true, stderr: true, timestamps: true };
  if (o.tail !== undefined) options.tail = o.tail;
  if (o.since !== undefined) options.since = o.since;
  let body: Readable;
  try {
    body = await new Promise<Readable>((resolve, reject) => modem.dial({
      path: `/containers/${encodeURIComponent(dockerId)}/logs?`,
      method: 'GET',
      isStream: true,
      statusCodes: { 200: true, 404: 'no such container', 409: 'container is being removed', 500: 'server error' },
      options,
    }, (err, data) => (err ? reject(err) : resolve(data as Readable))));
  } catch (e) {
    // gone, or being removed (409 "dead or marked for removal"): no logs to read
    const status = (e as { statusCode?: number }).statusCode;
    if (status === 404 || status === 409) return null;
    if (isTransientDockerError(e)) throw new DockerUnavailableError(`Docker daemon unreachable at ${runtime.endpoint} (logs): ${(e as Error).message}`);
    throw e;
  }
  open++;
  let closed = false;
  const lineFns: ((l: LogLine) => void)[] = [];
  const endFns: ((err?: Error) => void)[] = [];
  const lines = new LogLines((l) => { for (const fn of lineFns) fn(l); });
  body.on('data', (chunk: Buffer) => lines.push(chunk));
  const finish = (err?: Error) => {
    if (closed) return;
    closed = true;
    open--;
    lines.end();
    for (const fn of endFns) fn(err);
  };
  body.on('end', () => finish());
  body.on('close', () => finish());
  body.on('error', (e) => finish(e));

  return {
    onLine: (fn) => { lineFns.push(fn); },
    onEnd: (fn) => { endFns.push(fn); },
    pause: () => body.pause(),
    resume: () => body.resume(),
    close: () => { body.destroy(); finish(); },
  };
}

type StreamName = 'stdout' | 'stderr';

/** Docker's timestamp and the space after it, as the logs API writes them with `timestamps`. */
const STAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z /;

/** A multiplexed frame larger than this is not one (Docker frames a container's writes, far smaller). */
const MAX_FRAME_BYTES = 1024 * 1024;

/**
 * Docker's log response → lines: the frames of a non-TTY container (8-byte header: stream type,
 * 3 zero bytes, big-endian length) undone, a character cut between two frames joined again, lines
 * split at newlines and cut at MAX_LINE, each with the Docker timestamp it starts with. A TTY
 * container's response has no frames: raw text, as stdout. Memory is one partial line per stream.
 */
export class LogLines {
  private pending: Buffer = Buffer.alloc(0);
  private readonly partial: Record<StreamName, string> = { stdout: '', stderr: '' };
  private readonly decoders: Record<StreamName, StringDecoder> = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  /**
   * Docker's timestamp starts a line only: the pieces of a line cut at MAX_LINE carry the line's
   * own time (an app could otherwise put a forged time at a cut and have later lines hidden from a
   * follow, which shows lines newer than the last one seen).
   */
  private readonly cut: Record<StreamName, string | null> = { stdout: null, stderr: null };
  /** the stream's last frame ended inside a line (Docker's next piece of it starts with a time of Docker's) */
  private readonly open: Record<StreamName, boolean> = { stdout: false, stderr: false };
  /** the response is not multiplexed (a TTY container): raw text from then on */
  private raw = false;

  constructor(private readonly onLine: (l: LogLine) => void) {}

  push(chunk: Buffer): void {
    if (this.raw) {
      this.take('stdout', this.decoders.stdout.write(chunk));
      return;
    }
    let pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (pending.length >= 8) {
      const type = pending[0];
      const size = pending.readUInt32BE(4);
      // not a frame header, or one no Docker writes (a TTY app's output that merely looks like one
      // must not make us buffer gigabytes waiting for its "frame")
      if (type > 2 || pending[1] !== 0 || pending[2] !== 0 || pending[3] !== 0 || size > MAX_FRAME_BYTES) {
        this.raw = true;
        this.take('stdout', this.decoders.stdout.write(pending));
        pending = Buffer.alloc(0);
        break;
      }
      if (pending.length < 8 + size) break;
      const which = type === 2 ? 'stderr' : 'stdout';
      let payload = pending.subarray(8, 8 + size);
      // Docker cuts a line longer than 16 KiB into messages of its own, each framed with its own
      // timestamp: the one a piece that goes on a line begins with is Docker's, not the app's (it
      // was spliced into the line, every 16 KiB). Only that one: a time the app wrote stays text.
      if (this.open[which] && size > 0) {
        const m = STAMP.exec(payload.subarray(0, 40).toString('latin1'));
        if (m) payload = payload.subarray(m[0].length);
      }
      if (size > 0) this.open[which] = pending[8 + size - 1] !== 0x0a;
      this.take(which, this.decoders[which].write(payload));
      pending = pending.subarray(8 + size);
    }
    this.pending = pending;
  }

  /** The response ended: what is left of each stream is its last line. */
  end(): void {
    // (fewer than 8 bytes of a response that never showed a frame: raw text too)
    if (this.pending.length > 0 && (this.raw || this.pending[0] > 2)) this.take('stdout', this.decoders.stdout.write(this.pending));
    this.pending = Buffer.alloc(0);
    for (const s of ['stdout', 'stderr'] as const) {
      this.partial[s] += this.decoders[s].end(); // (a character cut off at the very end: U+FFFD)
      if (this.partial[s]) {
        this.emit(s, this.partial[s], true);
        this.partial[s] = '';
      }
    }
  }

  private take(stream: StreamName, chunk: string): void {
    let s = this.partial[stream] + chunk;
    let i: number;
    while ((i = s.indexOf('\n')) !== -1) {
      this.emit(stream, s.slice(0, i).replace(/\r$/, ''), true);
      s = s.slice(i + 1);
    }
    while (s.length > MAX_LINE) {
      this.emit(stream, s.slice(0, MAX_LINE), false);
      s = s.slice(MAX_LINE);
    }
    this.partial[stream] = s;
  }

  private emit(stream: StreamName, raw: string, whole: boolean): void {
    let time: string;
    let text: string;
    const carried = this.cut[stream];
    if (carried !== null) {
      time = carried;
      text = raw;
    } else {
      const sp = raw.indexOf(' ');
      time = sp > 0 && /^\d{4}-\d\d-\d\dT/.test(raw) ? raw.slice(0, sp) : '';
      text = time ? raw.slice(sp + 1) : raw;
    }
    this.cut[stream] = whole ? null : time;
    this.onLine({ stream, time, text });
  }
}
