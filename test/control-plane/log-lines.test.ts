import { describe, expect, it } from 'vitest';
import { LogLines, type LogLine } from '../../control-plane/runtime/logs.js';

/** Docker's frame: stream type (1 stdout, 2 stderr), 3 zero bytes, big-endian length, payload. */
function frame(type: 1 | 2, text: string | Buffer): Buffer {
  const body = typeof text === 'string' ? Buffer.from(text) : text;
  const head = Buffer.alloc(8);
  head[0] = type;
  head.writeUInt32BE(body.length, 4);
  return Buffer.concat([head, body]);
}

function read(chunks: Buffer[]): LogLine[] {
  const out: LogLine[] = [];
  const l = new LogLines((x) => out.push(x));
  for (const c of chunks) l.push(c);
  l.end();
  return out;
}

const T = '2026-12-02T00:00:00.123456789Z';

describe('LogLines: Docker log frames to lines', () => {
  it('lines cut across frames and chunks come out whole, with their stream and time', () => {
    const bytes = Buffer.concat([frame(1, `${T} hel`), frame(2, `${T} oops\n`), frame(1, 'lo wörld\r\n')]);
    // fed a byte at a time: headers, a UTF-8 character and lines all cut
    expect(read([...bytes].map((b) => Buffer.from([b])))).toEqual([
      { stream: 'stderr', time: T, text: 'oops' },
      { stream: 'stdout', time: T, text: 'hello wörld' },
    ]);
  });

  it('a line Docker cut into 16 KiB messages, each with its own time, comes out whole: its times are not spliced in (one the app wrote is text)', () => {
    const T2 = '2026-12-02T00:00:00.2Z';
    const [a, b, c] = ['A'.repeat(16 * 1024), 'B'.repeat(16 * 1024), 'C'.repeat(100)];
    const lines = read([frame(1, `${T} ${a}`), frame(2, `${T} err\n`), frame(1, `${T2} ${b}`), frame(1, `${T2} ${T2} ${c}\n`), frame(1, `${T2} next\n`)]);
    expect(lines).toEqual([
      { stream: 'stderr', time: T, text: 'err' },
      { stream: 'stdout', time: T, text: `${a}${b}${T2} ${c}` },
      { stream: 'stdout', time: T2, text: 'next' },
    ]);
  });

  it('a line past 64 KiB is cut, and every piece keeps the line\'s own time (a forged time at the cut is text)', () => {
    const forged = '2099-01-01T00:00:00.000000000Z';
    // the app writes its line so that the cut (at 64 KiB, time prefix included) falls on a time of its own
    const head = `${T} `;
    const lines = read([frame(1, head + 'A'.repeat(64 * 1024 - head.length) + forged), frame(1, ` hide what follows\n${T} next\n`)]);
    expect(lines.map((l) => l.time)).toEqual([T, T, T]);
    expect(lines[0].text).toBe('A'.repeat(64 * 1024 - head.length));
    expect(lines[1].text).toBe(`${forged} hide what follows`);
    expect(lines[2].text).toBe('next');
  });

  it('a TTY container (no frames) is raw stdout, short bytes at the end included', () => {
    expect(read([Buffer.from(`${T} one\n${T} two`), Buffer.from('\x01\x00\x00\x00 not a frame\n'), Buffer.from('x')])).toEqual([
      { stream: 'stdout', time: T, text: 'one' },
      { stream: 'stdout', time: T, text: 'two\x01\x00\x00\x00 not a frame' },
      { stream: 'stdout', time: '', text: 'x' },
    ]);
    expect(read([Buffer.from('hi')])).toEqual([{ stream: 'stdout', time: '', text: 'hi' }]);
  });

  it('the last line without a newline is given at the end', () => {
    expect(read([frame(1, `${T} last`)])).toEqual([{ stream: 'stdout', time: T, text: 'last' }]);
  });

  it("a TTY app's output that looks like a frame header announcing gigabytes is read as text at once, not buffered", () => {
    const fake = Buffer.alloc(8);
    fake[0] = 1;
    fake.writeUInt32BE(0xfffffff0, 4);
    const out = read([Buffer.concat([fake, Buffer.from(`${T} after\n`)])]);
    expect(out.map((l) => l.stream)).toEqual(['stdout']);
    expect(out[0].text).toContain('after');
  });
});
