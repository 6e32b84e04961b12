import type { Readable } from 'node:stream';
import { ClientError } from './client.js';

export interface SseEvent { event: string; data: string }

/** The longest line, and the most data in one event, a client holds before it gives up. */
export const MAX_SSE_BYTES = 1024 * 1024;

/**
 * Server-Sent Events from a response body, one event at a time (comments skipped). A line or an
 * event longer than MAX_SSE_BYTES is an error (a server cannot make the client buffer without end).
 */
export async function* readSse(body: Readable, max = MAX_SSE_BYTES): AsyncGenerator<SseEvent> {
  let buf = '';
  let event = 'message';
  let data: string[] = [];
  let dataLength = 0;
  const tooLong = () => new ClientError(`the server sent an event stream line or event longer than ${Math.round(max / 1024)} KiB; giving up`);
  body.setEncoding('utf8');
  for await (const chunk of body as AsyncIterable<string>) {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      if (line === '') {
        if (data.length) yield { event, data: data.join('\n') };
        event = 'message';
        data = [];
        dataLength = 0;
      } else if (line.startsWith(':')) {
        continue;
      } else {
        const c = line.indexOf(':');
        const field = c === -1 ? line : line.slice(0, c);
        const value = c === -1 ? '' : line.slice(c + 1).replace(/^ /, '');
        if (field === 'event') event = value;
        else if (field === 'data') {
          dataLength += value.length + 1;
          if (dataLength > max) throw tooLong();
          data.push(value);
        }
      }
    }
    if (buf.length > max) throw tooLong();
  }
}
