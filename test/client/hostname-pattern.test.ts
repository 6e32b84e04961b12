/**
 * isValidHostPattern (shared/hostname.ts) is a hand-written scan for speed; it must accept exactly
 * what the rule it replaced accepted: labels matching /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/ of at
 * most 63 characters, 253 in all, an optional leading `*.`; or a bracketed lower-case IPv6 literal
 * alone (`[anything]` used to pass, and under a wildcard).
 */
import { describe, expect, it } from 'vitest';
import { isIP } from 'node:net';
import { isValidHostPattern } from '../../shared/hostname.js';

function reference(h: string): boolean {
  if (h.length === 0 || h.length > 253) return false;
  const body = h.startsWith('*.') ? h.slice(2) : h;
  if (body.length === 0) return false;
  if (body.startsWith('[')) return body === h && h.endsWith(']') && isIP(h.slice(1, -1)) === 6 && h === h.toLowerCase();
  return body.split('.').every((l) => l.length > 0 && l.length <= 63 && /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/.test(l));
}

describe('isValidHostPattern', () => {
  it('agrees with the reference rule on chosen cases', () => {
    const cases = ['a.b', 'shop.example.com', '*.example.com', '*.', '*', '', '.', 'a..b', 'a.b.', '.a', '-a.b', 'a-.b', 'a-b.c', '_x.y', 'A.b',
      'a b', 'é.com', '[::1]', '*.[::1]', '[::1', '[x]', '[]', '[1.2.3.4]', '[::FFFF]', '[::ffff]', '[2001:db8::1]', '[a b]', '[::1]x', 'x'.repeat(63) + '.a', 'x'.repeat(64) + '.a', `${'a.'.repeat(126)}a`, `${'a.'.repeat(127)}a`, '**.a', '*.*.a', 'a*.b', '1.2.3.4', 'a.b:80'];
    for (const c of cases) expect(isValidHostPattern(c), JSON.stringify(c)).toBe(reference(c));
  });

  it('agrees with the reference rule on 200,000 random strings', () => {
    const alphabet = 'ab0_-.*[]:A é';
    let seed = 12345;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    for (let k = 0; k < 200_000; k++) {
      let s = '';
      const len = rnd(12);
      for (let i = 0; i < len; i++) s += alphabet[rnd(alphabet.length)];
      if (isValidHostPattern(s) !== reference(s)) expect(isValidHostPattern(s), JSON.stringify(s)).toBe(reference(s));
    }
  });
});

describe('isAddressName: the machine itself, never a name an app could claim', () => {
  it('is true for IP literals (v6 with or without brackets) and localhost only', async () => {
    const { isAddressName } = await import('../../shared/hostname.js');
    for (const n of ['localhost', '127.0.0.1', '10.1.2.3', '[::1]', '::1', '[2001:db8::1]']) expect(isAddressName(n), n).toBe(true);
    for (const n of ['localhost.example', 'a.localhost', '127.0.0.1.nip.io', '[a\nb c]', '[]', '999.1.1.1', '0x7f.1', 'example.com', '']) expect(isAddressName(n), n).toBe(false);
  });
});

describe('isLoopbackName: one test for every "only on loopback" rule', () => {
  it('is true for localhost (and names under it), 127/8 and ::1 only', async () => {
    const { isLoopbackName } = await import('../../shared/hostname.js');
    for (const n of ['localhost', 'app.localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]']) expect(isLoopbackName(n), n).toBe(true);
    for (const n of ['10.0.0.1', '0.0.0.0', '127.example.com', 'localhost.example.com', '::', '::ffff:127.0.0.1', '128.0.0.1', '']) expect(isLoopbackName(n), n).toBe(false);
  });
});
