import type { Readable } from 'node:stream';

export interface SseEvent { event: string; data: string }

/** Server-Sent Events from a response body, one event at a time (comments skipped). */
export async function* readSse(body: Readable): AsyncGenerator<SseEvent> {
  let buf = '';
  let event = 'message';
  let data: string[] = [];
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
      } else if (line.startsWith(':')) {
        continue;
      } else {
        const c = line.indexOf(':');
        const field = c === -1 ? line : line.slice(0, c);
        const value = c === -1 ? '' : line.slice(c + 1).replace(/^ /, '');
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
      }
    }
  }
}
