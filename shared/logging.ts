import { pino, type Logger, type LoggerOptions } from 'pino';

/**
 * pino JSON logs, one line per event. Asynchronous destination so that logging never blocks
 * the event loop with synchronous I/O (the proxy hot path depends on this).
 */
export function createLogger(name: string, opts: LoggerOptions = {}): Logger {
  const level = process.env.BERTH_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info';
  const dest = pino.destination({ dest: 1, sync: false, minLength: 0 });
  const logger = pino({ name, level, base: { pid: process.pid }, ...opts }, dest);
  const flush = () => { try { dest.flushSync(); } catch { /* closing */ } };
  process.once('beforeExit', flush);
  process.once('exit', flush);
  return logger;
}

export type { Logger };
