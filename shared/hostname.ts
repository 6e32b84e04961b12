import { isIP } from 'node:net';
import { domainToASCII, domainToUnicode } from 'node:url';

/**
 * Normalise a hostname the way every part of berth compares them:
 * lower-case; scheme, userinfo, port, path, query, trailing slash and trailing dot removed;
 * IDN converted to punycode. Returns '' when nothing usable is left.
 *
 * Fast path: a Host header that is already lower-case ASCII without port or trailing dot
 * is returned as-is without allocating.
 */
export function normalizeHost(raw: string): string {
  return isNormalHost(raw, 0) ? raw : normalizeHostSlow(raw);
}

/**
 * This machine's loopback: `localhost` (and a name under it, RFC 6761), 127.0.0.0/8, `::1` with or
 * without brackets. One test for every "only on loopback" rule (the proxy admin, Docker over plain
 * TCP, published ports, the CLI's default scheme, the workload generator's proxy URL).
 */
export function isLoopbackName(name: string): boolean {
  const n = unbracket(name);
  return n === 'localhost' || n.endsWith('.localhost') || n === '::1' || (isIP(n) === 4 && n.startsWith('127.'));
}

/**
 * An IP literal (v4, or v6 with or without brackets) or `localhost`: a name of the machine itself,
 * never one an app could claim.
 */
export function isAddressName(name: string): boolean {
  const n = unbracket(name);
  return n === 'localhost' || isIP(n) !== 0;
}

/**
 * Why `host` (normalised) cannot be an app's own hostname, or null. It must name one site: no
 * wildcard (it would claim every subdomain of someone else's domain, or a whole TLD), no single
 * label (`com`, `intranet`), not `localhost` itself (`app.localhost` is fine: the walkthrough uses
 * it), no IP literal (every request by address would land on this app), no `---` in the first
 * label (tag URLs), no `_` (a DNS name may hold one, a hostname may not), and IDN labels that are
 * valid punycode in one of the Latin-like scripts at most (no homograph of another app's name). One set of words for the API's 400 and `berth deploy --host`'s usage error.
 */
export function appHostnameProblem(host: string): string | null {
  if (host.includes('*')) return 'is a wildcard; give one exact hostname';
  if (host.startsWith('[') || isIP(host)) return 'is an IP address; give a DNS name';
  if (host === 'localhost') return 'is the loopback name; a name under it like app.localhost works for local use';
  const labels = host.split('.');
  if (labels.length < 2) return 'has a single label; give a fully qualified name like app.example.com';
  if (/^\d+$/.test(labels[labels.length - 1])) return 'ends in a numeric label, which no DNS name does';
  // `{tag}---{app}` names a revision's tag URL (docs/revisions.md): one user's app must never claim another's tag host
  if (labels[0].includes('---')) return 'has "---" in its first label, which is reserved for revision tag URLs ({tag}---{app_hostname})';
  // (DNS names may hold "_", hostnames may not: browsers and certificates refuse them)
  if (host.includes('_')) return 'has "_", which no hostname may have; use "-"';
  for (const label of labels) {
    if (!label.startsWith('xn--')) continue;
    // an IDN label (normalizeHost gives punycode): one that decodes and encodes back to itself, in
    // one of the scripts that look like Latin at most (a Cyrillic "о" in "bоb" is a lookalike of
    // someone's "bob"; Han, kana and the rest mix freely)
    const text = domainToUnicode(label);
    if (text === '' || domainToASCII(text) !== label) return `has "${label}", which is not valid punycode`;
    if (LOOKALIKE_SCRIPTS.filter((re) => re.test(text)).length > 1) return `mixes Latin, Cyrillic or Greek letters in "${text}" (a lookalike of another name); use one script per label`;
  }
  return null;
}

/** Scripts whose letters pass for one another in a hostname (Unicode's confusables are mostly between these). */
const LOOKALIKE_SCRIPTS = [/\p{Script=Latin}/u, /\p{Script=Cyrillic}/u, /\p{Script=Greek}/u, /\p{Script=Armenian}/u, /\p{Script=Cherokee}/u];

/** `[v6]` → `v6`; anything else as it is. */
function unbracket(name: string): string {
  return name.length > 1 && name.charCodeAt(0) === 91 /* [ */ && name.endsWith(']') ? name.slice(1, -1) : name;
}

/** raw from `from` on is a host normalizeHost returns as it is: a-z 0-9 - . _, not ending in '.' (not empty). */
export function isNormalHost(raw: string, from: number): boolean {
  const len = raw.length;
  if (len <= from) return false;
  for (let i = from; i < len; i++) {
    const c = raw.charCodeAt(i);
    if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || (c === 46 && i !== len - 1) || c === 95)) return false;
  }
  return true;
}

function normalizeHostSlow(raw: string): string {
  let s = raw.trim();
  // scheme
  const schemeIdx = s.indexOf('://');
  if (schemeIdx !== -1 && schemeIdx < 16) s = s.slice(schemeIdx + 3);
  // path, query, fragment
  let end = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) { end = i; break; }
  }
  s = s.slice(0, end);
  // userinfo
  const at = s.lastIndexOf('@');
  if (at !== -1) s = s.slice(at + 1);
  // port (IPv6 literal in brackets keeps its colons)
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    s = close === -1 ? s : s.slice(0, close + 1);
  } else {
    const colon = s.indexOf(':');
    if (colon !== -1) s = s.slice(0, colon);
  }
  while (s.endsWith('.')) s = s.slice(0, -1);
  if (s.length === 0) return '';
  s = s.toLowerCase();
  if (s.startsWith('[')) return s;
  let ascii = true;
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 127) { ascii = false; break; }
  if (ascii) return s;
  // Wildcard labels are kept out of the IDN conversion.
  if (s.startsWith('*.')) {
    const rest = domainToASCII(s.slice(2));
    return rest ? '*.' + rest : '';
  }
  return domainToASCII(s);
}

/**
 * A hostname pattern as accepted in route tables and app_hostname: exact or `*.suffix`. Labels of
 * 1–63 characters `a-z 0-9 _ -`, not starting or ending with `-`; a bracketed IPv6 literal in
 * lower case (not under a wildcard).
 * One pass over the characters, no allocation: a 10,000-route table checks 20,000 of these on
 * every push (a split-and-regex version took 15–40 ms of that).
 */
export function isValidHostPattern(h: string): boolean {
  const n = h.length;
  if (n === 0 || n > 253) return false;
  let i = n >= 2 && h.charCodeAt(0) === 42 /* * */ && h.charCodeAt(1) === 46 /* . */ ? 2 : 0;
  if (i === n) return false;
  // an IPv6 literal, lower-case, never under a wildcard (`[anything]` used to pass whole)
  if (h.charCodeAt(i) === 91 /* [ */) return i === 0 && h.charCodeAt(n - 1) === 93 /* ] */ && isLowerIPv6(h.slice(1, -1));
  let start = i;
  for (; i <= n; i++) {
    const c = i === n ? 46 : h.charCodeAt(i);
    if (c === 46) {
      const len = i - start;
      if (len === 0 || len > 63 || h.charCodeAt(start) === 45 /* - */ || h.charCodeAt(i - 1) === 45) return false;
      start = i + 1;
    } else if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 95 || c === 45)) {
      return false;
    }
  }
  return true;
}

function isLowerIPv6(s: string): boolean {
  return isIP(s) === 6 && s === s.toLowerCase();
}
