/**
 * The proxy's own bugs, caught where they were thrown (uWS callbacks, socket events, timers) so
 * that one costs its request, never the process. Written to stderr (not the logger: this runs on
 * the serving path, and the logger may be what broke), the first ten and then every thousandth,
 * numbered: a bug met by every request must not flood the log or the disk.
 */
let count = 0;

export function reportInternalError(where: string, e: unknown): void {
  if (++count <= 10 || count % 1000 === 0) {
    process.stderr.write(`berth proxy: internal error #${count} ${where}: ${e instanceof Error ? e.stack : String(e)}\n`);
  }
}
