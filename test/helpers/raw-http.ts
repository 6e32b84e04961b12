import { connect } from 'node:net';

export interface RawResult {
  /** everything the server sent, as Latin-1 */
  text: string;
  /** the server closed the connection before `waitMs` */
  closed: boolean;
  /** status codes of every response head in `text` */
  statuses: number[];
}

/**
 * Send bytes on a fresh TCP connection and collect what comes back for `waitMs` (or until the
 * server closes). For requests no HTTP client library will send: duplicate headers, bare bytes,
 * pipelining, HTTP/1.0.
 */
export function rawHttp(port: number, data: string | Buffer, waitMs = 1500, untilStatuses = 0): Promise<RawResult> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const statuses = [...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
      resolve({ text, closed, statuses });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      if (untilStatuses > 0) {
        const n = [...Buffer.concat(chunks).toString('latin1').matchAll(/HTTP\/1\.[01] \d{3}/g)].length;
        if (n >= untilStatuses) setTimeout(() => finish(false), 50);
      }
    });
    s.on('close', () => finish(true));
    s.on('error', () => finish(true));
    s.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  });
}

/** The value of one response header in a raw response (first match, case-insensitive). */
export function rawHeader(text: string, name: string): string | undefined {
  const m = new RegExp(`\\r\\n${name}: ([^\\r]*)\\r\\n`, 'i').exec(text);
  return m?.[1];
}
