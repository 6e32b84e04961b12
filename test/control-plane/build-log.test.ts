/** The build log's cap (images/build-log.ts): the tail kept whole, at most `cap` bytes, in linear time. */
import { describe, expect, it } from 'vitest';
import { BuildLog } from '../../control-plane/images/build-log.js';

describe('BuildLog', () => {
  it('keeps the newest output, at most cap bytes, UTF-8 characters whole, and says what was cut', () => {
    const l = new BuildLog(4096);
    let all = '';
    for (let i = 0; i < 2000; i++) {
      const t = `line ${i} é€😀\n`;
      all += t;
      l.append(t);
    }
    const text = l.text();
    expect(text).toMatch(/^\[berth: \d+ bytes of earlier build output were cut; showing the last \d+ bytes\]\n/);
    const body = text.slice(text.indexOf('\n') + 1);
    expect(all.endsWith(body)).toBe(true);
    expect(Buffer.byteLength(body)).toBeLessThanOrEqual(4096);
    expect(Buffer.byteLength(body)).toBeGreaterThan(4096 - 100);
    expect(body).not.toContain('\ufffd');
    expect(l.truncated).toBe(true);
    // one chunk larger than the cap: its tail
    const big = new BuildLog(10);
    big.append('0123456789abcdefghij');
    const tail = big.text().split('\n')[1];
    expect(tail.length).toBeGreaterThan(0);
    expect(tail.length).toBeLessThanOrEqual(10);
    expect('0123456789abcdefghij'.endsWith(tail)).toBe(true);
  });

  it('a flood of tiny chunks after a big one costs linear time (the head is not copied again at each append)', () => {
    const cap = 1 << 20;
    const t0 = performance.now();
    const l = new BuildLog(cap, 'x'.repeat(cap));
    for (let i = 0; i < 300_000; i++) l.append('y\n');
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(Buffer.byteLength(l.text())).toBeLessThanOrEqual(cap + 200);
    expect(l.text().endsWith('y\ny\n')).toBe(true);
  });
});
