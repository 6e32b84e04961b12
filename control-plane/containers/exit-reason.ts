/**
 * How an instance's end is said, in one place: its status reason, the crash notice of its logs and
 * a start failure all read the same words. An exit code a signal explains (128 + N, as a shell
 * reports it) names the signal: `exited with code 137, killed by SIGKILL`.
 */

/** The signals a process is most often ended by. */
const SIGNALS: Record<number, string> = { 2: 'interrupted by SIGINT', 6: 'aborted (SIGABRT)', 9: 'killed by SIGKILL', 11: 'segmentation fault (SIGSEGV)', 15: 'terminated by SIGTERM' };

/** `, killed by SIGKILL` for an exit code a signal explains, else ''. */
export function signalNote(code: number | null | undefined): string {
  const signal = typeof code === 'number' && code > 128 ? SIGNALS[code - 128] : undefined;
  return signal ? `, ${signal}` : '';
}

/** An instance that ran and ended: `exited with code 3`, `exited with code 137, killed by SIGKILL`. */
export function exitReason(code: number | null | undefined): string {
  return `exited with code ${code ?? 'unknown'}${signalNote(code)}`;
}
