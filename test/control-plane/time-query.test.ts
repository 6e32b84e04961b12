/**
 * One parser for `since` / `until` (control-plane/http/time-query.ts), used by the logs routes
 * (parseSince) and the metrics routes (parseRange): everything either accepted before, the same
 * 400 messages for what is not a time.
 */
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../control-plane/http/errors.js';
import { MAX_TIME_MS, parseTimeQuery } from '../../control-plane/http/time-query.js';
import { parseSince } from '../../control-plane/logs/routes.js';
import { parseRange } from '../../control-plane/metering/query.js';

const NOW = Date.UTC(2026, 10, 30, 18, 0, 0);
const at = (raw: string, opts: { maxAheadMs?: number } = {}) => parseTimeQuery('since', raw, { now: NOW, ...opts });

/** The 400 message a value gets (fails the test when it is accepted). */
function refused(raw: string, opts: { maxAheadMs?: number } = {}): string {
  try {
    at(raw, opts);
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).status).toBe(400);
    expect((e as ApiError).code).toBe('invalid_request');
    return (e as ApiError).message;
  }
  throw new Error(`"${raw}" was accepted`);
}

describe('parseTimeQuery', () => {
  it('durations back from now: s, m, h, d, up to ten years', () => {
    expect(at('30s')).toBe(NOW - 30_000);
    expect(at('10m')).toBe(NOW - 600_000);
    expect(at('2h')).toBe(NOW - 7_200_000);
    expect(at('1d')).toBe(NOW - 86_400_000);
    expect(at(' 0m ')).toBe(NOW);
    expect(at('3660d')).toBe(NOW - 3660 * 86_400_000);
  });

  it('unix seconds, with decimals', () => {
    expect(at('0')).toBe(0);
    expect(at('1764525600')).toBe(1764525600_000);
    expect(at('1764525600.25')).toBe(1764525600_250);
    expect(at('99999999999')).toBe(99999999999_000); // in the year 5138: a time, not a logs `since` (below)
  });

  it('RFC 3339 and the ISO 8601 forms the metrics accepted: a date alone and no offset are UTC', () => {
    expect(at('2026-11-30T18:00:00Z')).toBe(NOW);
    expect(at('2026-11-30t18:00:00z')).toBe(NOW);
    expect(at('2026-11-30 18:00:00Z')).toBe(NOW);
    expect(at('2026-11-30T18:00:00.123456789Z')).toBe(NOW + 123.456789);
    expect(at('2026-11-30T19:00:00+01:00')).toBe(NOW);
    expect(at('2026-11-30T16:30:00-0130')).toBe(NOW);
    expect(at('2026-11-30T18:00')).toBe(NOW);
    expect(at('2026-11-30T18:00:00')).toBe(NOW);
    expect(at('2026-11-30')).toBe(Date.UTC(2026, 10, 30));
    expect(at('2028-02-29')).toBe(Date.UTC(2028, 1, 29));
    expect(at('1970-01-01T00:00:00Z')).toBe(0);
    expect(at('9999-12-31T23:59:59Z')).toBe(MAX_TIME_MS - 999);
  });

  it('malformed values are a 400 naming the parameter and the forms', () => {
    for (const raw of ['abc', '', 'yesterday', '10 m', '10w', '-5m', '1e9', '0x10', '2026-11', '2026-1-01', '2026-11-30T18', 'now', '10m ago', '1764525600.1234567891']) {
      expect(refused(raw), raw).toBe(`query.since "${raw}" is not a duration back from now (30s, 10m, 2h, 1d), unix seconds or an RFC 3339 time (2026-11-30T18:00:00Z)`);
    }
    expect(refused('x'.repeat(100))).toContain(`"${'x'.repeat(64)}"`);
  });

  it('absurd values: durations past ten years, times before 1970 or after 9999, dates that do not exist', () => {
    for (const raw of ['99999999999h', '9999999d', '3661d', '999999999999999999999999s', '1'.repeat(400) + 'm']) {
      expect(refused(raw), raw).toMatch(/^query\.since ".*" reaches back more than ten years$/);
    }
    for (const raw of ['1969-12-31T23:59:59Z', '0000-01-01T00:00:00Z', '1899-06-01', '1970-01-01T00:30:00+01:00', '9999-12-31T23:59:59-00:01', '999999999999', '253402300800']) {
      expect(refused(raw), raw).toBe(`query.since "${raw}" is out of range (a time from 1970 to 9999)`);
    }
    for (const raw of ['2026-13-01', '2026-00-10', '2026-02-29', '2026-02-31', '2026-04-31', '2026-11-00', '2026-11-30T24:00:00Z', '2026-11-30T18:60:00Z', '2026-11-30T23:59:60Z']) {
      expect(refused(raw), raw).toMatch(/^query\.since ".*" is not a date that exists/);
    }
    expect(refused('2026-11-30T18:00:00+24:00')).toMatch(/offset that does not exist/);
  });

  it('maxAheadMs refuses a time too far after now', () => {
    expect(at('2026-12-01T17:59:59Z', { maxAheadMs: 86_400_000 })).toBe(NOW + 86_399_000);
    expect(refused('2026-12-01T18:00:01Z', { maxAheadMs: 86_400_000 })).toBe('query.since "2026-12-01T18:00:01Z" is in the future (at most 24 h ahead)');
    expect(at('3000-01-01')).toBe(Date.UTC(3000, 0, 1));
  });
});

describe('the logs and the metrics share it', () => {
  it('logs since: unix seconds, at most a day ahead', () => {
    expect(parseSince('10m', NOW)).toBe(NOW / 1000 - 600);
    expect(parseSince('2026-11-30T18:00:00.5Z', NOW)).toBe(NOW / 1000 + 0.5);
    expect(() => parseSince('3000-01-01T00:00:00Z', NOW)).toThrow(/in the future/);
    expect(() => parseSince('abc', NOW)).toThrow('query.since "abc" is not a duration back from now');
  });

  it('metrics since/until: durations and RFC 3339 both ways, since after until refused', () => {
    expect(parseRange({ since: '2h', until: '10m' }, undefined, NOW)).toEqual({ since: new Date(NOW - 7_200_000), until: new Date(NOW - 600_000) });
    expect(parseRange({ since: '2026-11-30', until: '1796061600' }, undefined, NOW)).toEqual({ since: new Date(Date.UTC(2026, 10, 30)), until: new Date(NOW) });
    expect(parseRange({}, 3_600_000, NOW)).toEqual({ since: new Date(NOW - 3_600_000), until: new Date(NOW) });
    expect(parseRange({ since: '', until: '' }, undefined, NOW)).toEqual({ since: undefined, until: new Date(NOW) });
    expect(() => parseRange({ until: 'abc' }, undefined, NOW)).toThrow('query.until "abc" is not a duration back from now');
    expect(() => parseRange({ since: '99999999999h' }, undefined, NOW)).toThrow('query.since "99999999999h" reaches back more than ten years');
    expect(() => parseRange({ since: '1m', until: '2m' }, undefined, NOW)).toThrow('since must not be after until');
    // the metrics allow any time up to 9999 (a range into the future is simply empty there)
    expect(parseRange({ until: '9999-01-01' }, undefined, NOW).until).toEqual(new Date(Date.UTC(9999, 0, 1)));
  });
});
