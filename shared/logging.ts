import { isatty } from 'node:tty';
import { Writable } from 'node:stream';
import { pino, type Logger, type LoggerOptions } from 'pino';
import pinoPretty from 'pino-pretty';

/**
 * pino logs, one line per event: JSON when stdout is not a terminal (files, pipes, journald,
 * log shippers), pino-pretty's coloured one-liners when it is. `BERTH_LOG_FORMAT=json|pretty`
 * overrides the guess. JSON goes through an asynchronous destination so that logging never blocks
 * the event loop with synchronous I/O (the proxy hot path depends on this); the pretty printer
 * only runs for a person watching a terminal.
 */
export function logFormat(env: NodeJS.ProcessEnv = process.env): 'json' | 'pretty' {
  const f = env.BERTH_LOG_FORMAT;
  if (f === 'json' || f === 'pretty') return f;
  return isatty(1) ? 'pretty' : 'json'; // fd 1, not process.stdout: worker threads see the same terminal
}

export function createLogger(name: string, opts: LoggerOptions = {}): Logger {
  const level = process.env.BERTH_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info';
  if (logFormat() === 'pretty') {
    const pretty = pinoPretty({
      colorize: isatty(1) && !process.env.NO_COLOR,
      translateTime: 'SYS:HH:MM:ss',
      ignore: 'pid,hostname,name',
      messageFormat: '{if name}{name}{end}: {msg}',
      singleLine: true,
      sync: true,
      destination: 1,
    });
    return pino({ name, level, base: { pid: process.pid }, ...opts }, pretty as unknown as Writable);
  }
  const dest = pino.destination({ dest: 1, sync: false, minLength: 0 });
  const logger = pino({ name, level, base: { pid: process.pid }, ...opts }, dest);
  const flush = () => { try { dest.flushSync(); } catch { /* closing */ } };
  process.once('beforeExit', flush);
  process.once('exit', flush);
  return logger;
}

export type { Logger };
