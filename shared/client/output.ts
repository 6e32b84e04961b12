/**
 * Terminal output for client commands: aligned tables, durations, and a Progress line that is a
 * live bar on a terminal and a few plain lines when piped (no escape codes in logs and CI).
 * Results go to stdout; progress and build logs to stderr, so `berth deploy --json > out.json` works.
 * Table cells and status lines carry fields from the API: both pass them through `printable`.
 */
import { printable } from './style.js';

export interface Column<T> {
  header: string;
  value(row: T): string | number | null | undefined;
}

/**
 * A plain aligned table (two spaces between columns, no borders, header in capitals). Cells are
 * mostly fields from the API, so each is made `printable` (no escape sequences, piped or not) and
 * kept on one line (a tab or newline in a reason would break the columns).
 */
export function table<T>(rows: T[], columns: Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => { const v = c.value(r); return v === null || v === undefined ? '-' : cell(String(v)); }));
  const heads = columns.map((c) => c.header.toUpperCase());
  const widths = heads.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i].length)));
  const line = (row: string[]) => row.map((v, i) => (i === row.length - 1 ? v : v.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(heads), ...cells.map(line)].join('\n') + '\n';
}

/** A field from the API on one line: printable, tabs and newlines as spaces. */
export function cell(text: string): string {
  return printable(text).replace(/[\t\n]/g, ' ');
}

/**
 * JSON text for stdout. JSON.stringify escapes C0 controls (ESC becomes \\u001b) but not DEL and
 * the C1 controls (0x9b is a one-byte CSI to some terminals): those are escaped here too, which
 * parses to the same value.
 */
export function jsonText(value: unknown, indent?: number): string {
  // eslint-disable-next-line no-control-regex
  return (JSON.stringify(value, null, indent) ?? 'null').replace(/[\x7f-\x9f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function printJson(value: unknown, out: NodeJS.WritableStream = process.stdout): void {
  out.write(jsonText(value, 2) + '\n');
}

/** 850 ms → "0.9s", 75 s → "1m15s". */
export function formatDuration(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * One step's progress. On a TTY: a bar redrawn in place (at most every 80 ms) and replaced by a
 * final line. Piped: a line at 0 %, 25 %, 50 %, 75 % and the final line — nothing more.
 */
export class Progress {
  private lastDraw = 0;
  private lastQuarter = -1;
  private readonly tty: boolean;

  constructor(private readonly label: string, private readonly total: number, private readonly out: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(out.isTTY);
  }

  update(done: number): void {
    const pct = this.total > 0 ? Math.min(100, Math.floor((done / this.total) * 100)) : 100;
    if (this.tty) {
      const now = Date.now();
      if (now - this.lastDraw < 80 && done < this.total) return;
      this.lastDraw = now;
      const width = 30;
      const fill = Math.round((pct / 100) * width);
      this.out.write(`\r\x1b[2K${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${String(pct).padStart(3)}%  ${formatBytes(done)} / ${formatBytes(this.total)}`);
      return;
    }
    const quarter = Math.floor(pct / 25);
    if (quarter !== this.lastQuarter && quarter < 4) {
      this.lastQuarter = quarter;
      this.out.write(`${this.label}: ${quarter * 25}% of ${formatBytes(this.total)}\n`);
    }
  }

  done(line: string): void {
    this.out.write(this.tty ? `\r\x1b[2K${line}\n` : `${line}\n`);
  }
}

/**
 * A waiting line: a spinner redrawn in place on a TTY; piped, the text once and then only changes.
 * The text (which may quote the API, e.g. a container's status reason) is made `printable`.
 */
export class Status {
  private timer?: NodeJS.Timeout;
  private text = '';
  private frame = 0;
  private readonly tty: boolean;
  private printed = '';

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(out.isTTY);
  }

  set(text: string): void {
    text = printable(text).replace(/\n/g, ' ');
    this.text = text;
    if (!this.tty) {
      if (text !== this.printed) { this.out.write(`${text}\n`); this.printed = text; }
      return;
    }
    this.draw();
    this.timer ??= setInterval(() => this.draw(), 120);
    this.timer.unref();
  }

  /** Clear the line (TTY) before something else prints. */
  clear(): void {
    if (this.tty && this.timer) this.out.write('\r\x1b[2K');
  }

  done(line: string): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.out.write(this.tty ? `\r\x1b[2K${line}\n` : `${line}\n`);
    this.printed = '';
  }

  private draw(): void {
    const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    this.out.write(`\r\x1b[2K${frames[this.frame++ % frames.length]} ${this.text}`);
  }
}
