/**
 * What no app may have as its hostname (shared/hostname.ts appHostnameProblem: the API's 400 and
 * `berth deploy --host`'s usage error use the same words).
 */
import { expect, it } from 'vitest';
import { appHostnameProblem, normalizeHost } from '../../shared/hostname.js';

const problem = (h: string) => appHostnameProblem(normalizeHost(h));

it('IDN labels: valid punycode, and Latin, Cyrillic and Greek letters never mixed in one label (a homograph of another app)', () => {
  expect(problem('bоb.localhost')).toBe('mixes Latin, Cyrillic or Greek letters in "bоb" (a lookalike of another name); use one script per label'); // Cyrillic о
  expect(problem('pаypal.example.com')).toMatch(/^mixes Latin, Cyrillic or Greek letters in "pаypal"/);
  expect(problem('αpple.example.com')).toMatch(/^mixes/); // Greek alpha
  expect(problem('xn--bob.localhost')).toBe('has "xn--bob", which is not valid punycode');
  // one script per label, however many scripts in the name; scripts that do not pass for Latin mix freely
  for (const ok of ['münchen.example.com', 'москва.example.com', 'shop.москва.example.com', '例え.テスト.example.com', 'ひらがなカタカナ漢字.example.com', 'shop.example.com', 'hello.localhost']) {
    expect(problem(ok), ok).toBeNull();
  }
});

it('the other rules, in their words', () => {
  expect(problem('b_b.localhost')).toBe('has "_", which no hostname may have; use "-"');
  expect(problem('localhost')).toMatch(/^is the loopback name/);
  expect(problem('10.0.0.1')).toBe('is an IP address; give a DNS name');
  expect(problem('intranet')).toMatch(/^has a single label/);
  expect(problem('canary---shop.example.com')).toMatch(/reserved for revision tag URLs/);
  expect(problem('*.example.com')).toMatch(/^is a wildcard/);
});
