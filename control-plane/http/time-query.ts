import { badRequest } from './errors.js';

/**
 * Times in query strings (`since`, `until` of the logs, metrics and billing routes), one parser
 * for all of them. Accepted, surrounding spaces ignored:
 *
 * - a duration back from now: digits and `s`, `m`, `h` or `d` (`30s`, `10m`, `2h`, `1d`), at most
 *   ten years;
 * - unix seconds, with up to 9 decimals (`1764525600`, `1764525600.5`; `0` is 1970);
 * - an RFC 3339 / ISO 8601 time: `2026-11-30`, `2026-11-30T18:00`, `2026-11-30T18:00:00Z`,
 *   `2026-11-30 18:00:00.123+01:00` (`T` or a space; seconds and fraction optional; an offset as
 *   `Z`, `+01:00` or `+0100`). A date alone is midnight UTC, and so is a time without an offset
 *   UTC (never the server's zone). Dates that do not exist (`2026-02-31`, `25:00`) are refused.
 *
 * Anything else is a 400 naming the parameter, as is a time before 1970 or after 9999, a duration
 * reaching back more than ten years, or (when the caller says so) a time too far ahead.
 */
export const TIME_QUERY_FORMS = 'a duration back from now (30s, 10m, 2h, 1d), unix seconds or an RFC 3339 time (2026-11-30T18:00:00Z)';

/** The JSON schema of such a query parameter (the parser does the rest). */
export const timeQuerySchema = { type: 'string', maxLength: 64, description: TIME_QUERY_FORMS } as const;

/** How far back a duration may reach. */
export const MAX_DURATION_BACK_MS = 10 * 366 * 86_400_000;
/** The last millisecond of 9999 (4-digit years only). */
export const MAX_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|z|[+-]\d{2}:?\d{2})?)?$/;

export interface TimeQueryOptions {
  /** "now" for durations and `maxAheadMs` (default Date.now()) */
  now?: number;
  /** refuse a time more than this far after now (default: only the year-9999 bound) */
  maxAheadMs?: number;
}

/** A time query value → milliseconds since 1970; 400 (`query.{name} "…" …`) when it is not one. */
export function parseTimeQuery(name: string, raw: string, opts: TimeQueryOptions = {}): number {
  const now = opts.now ?? Date.now();
  const s = raw.trim();
  const shown = `query.${name} "${raw.slice(0, 64)}"`;
  const bounded = (ms: number): number => {
    if (!Number.isFinite(ms) || ms < 0 || ms > MAX_TIME_MS) throw badRequest(`${shown} is out of range (a time from 1970 to 9999)`);
    if (opts.maxAheadMs !== undefined && ms > now + opts.maxAheadMs) {
      throw badRequest(`${shown} is in the future (at most ${Math.round(opts.maxAheadMs / 3_600_000)} h ahead)`);
    }
    return ms;
  };

  const rel = /^(\d+)([smhd])$/.exec(s);
  if (rel) {
    const back = Number(rel[1]) * UNIT_MS[rel[2] as keyof typeof UNIT_MS];
    if (!(back <= MAX_DURATION_BACK_MS)) throw badRequest(`${shown} reaches back more than ten years`);
    return bounded(now - back);
  }
  if (/^\d+(\.\d{1,9})?$/.test(s)) return bounded(Number(s) * 1000);

  const m = RFC3339.exec(s);
  if (m) {
    const [year, month, day, hour = 0, minute = 0, second = 0] = m.slice(1, 7).map((v) => (v === undefined ? undefined : Number(v))) as number[];
    const fraction = m[7] === undefined ? 0 : Number(`0.${m[7]}`) * 1000;
    const daysInMonth = [31, isLeap(year) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1] ?? 0;
    if (day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) {
      throw badRequest(`${shown} is not a date that exists (month 01-12, day within the month, hours 00-23, minutes and seconds 00-59)`);
    }
    let offsetMin = 0;
    const zone = m[8];
    if (zone !== undefined && zone.toUpperCase() !== 'Z') {
      const oh = Number(zone.slice(1, 3));
      const om = Number(zone.slice(-2));
      if (oh > 23 || om > 59) throw badRequest(`${shown} has an offset that does not exist (${zone})`);
      offsetMin = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om);
    }
    // before 1900 it is out of range anyway (and Date.UTC would read years 0-99 as 1900-1999)
    if (year < 1900) return bounded(-1);
    return bounded(Date.UTC(year, month - 1, day, hour, minute, second) + fraction - offsetMin * 60_000);
  }
  throw badRequest(`${shown} is not ${TIME_QUERY_FORMS}`);
}

const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
