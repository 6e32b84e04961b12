import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isValidHostPattern } from '../../shared/hostname.js';

/** A certificate and its key, as PEM files (uWS reads the files itself). */
export interface CertFiles {
  cert: string;
  key: string;
}

/**
 * What the HTTPS listener serves: a default certificate (clients without SNI, or names no other
 * certificate covers) and one per server name (`shop.example.com`, or `*.example.com`) chosen by
 * SNI. Every pair is checked at start (parses, and the key matches the certificate), so a bad
 * file stops the proxy with its name instead of a listener that fails handshakes.
 */
export interface TlsConfig {
  default: CertFiles;
  names: (CertFiles & { serverName: string })[];
  /** the private copies uWS reads (see loadTlsConfig), removed once a newer set is in use */
  snapshot?: string;
  /** when each certificate (the first of each chain) expires: `default`, then each server name */
  expiry: { name: string; notAfter: string }[];
  /** pairs of ACME-managed names left out because they do not fit (ordered again), and why */
  skipped?: { name: string; reason: string }[];
}

/** The expiry of the first certificate in a PEM chain (null when it does not parse as X.509). */
function notAfter(cert: Buffer): string | null {
  try {
    return new Date(new X509Certificate(cert).validTo).toISOString();
  } catch {
    return null;
  }
}

/** Largest PEM file read for the check (a chain of a few certificates is a few KiB). */
const MAX_PEM_BYTES = 1024 * 1024;

function readPem(file: string, what: string): Buffer {
  const st = statSync(file, { throwIfNoEntry: false });
  if (!st) throw new Error(`${what} ${file} does not exist`);
  if (!st.isFile()) throw new Error(`${what} ${file} is not a regular file`);
  if (st.size > MAX_PEM_BYTES) throw new Error(`${what} ${file} is larger than ${MAX_PEM_BYTES} bytes`);
  return readFileSync(file);
}

/** The pair's bytes; throws naming the files unless they are a PEM certificate (chain) with its matching key. */
export function checkPair(pair: CertFiles): { cert: Buffer; key: Buffer } {
  const cert = readPem(pair.cert, 'certificate');
  const key = readPem(pair.key, 'key');
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new Error(`${pair.cert} + ${pair.key}: ${(e as Error).message}`);
  }
  return { cert, key };
}

/**
 * The default pair, and every `NAME.crt` + `NAME.key` in `dir` (NAME is the server name; a file
 * for a wildcard is named `*.example.com.crt`). A `.crt` without its `.key` is an error.
 *
 * With `snapshot`, the bytes that were checked are written there (0600, in a 0700 directory) and
 * the config names those copies: uWS reads certificate files itself, and a pair rewritten between
 * the check and that read (a renewal in progress when SIGHUP comes) would reach it unchecked —
 * an SNI pair whose key no longer matches takes the whole process down inside uWS.
 */
export function loadTlsConfig(o: { cert: string; key: string; dir?: string; acme?: { domains: readonly string[] } }, snapshot?: string): TlsConfig {
  const def = { cert: resolve(o.cert), key: resolve(o.key) };
  const bytes = [checkPair(def)];
  const names: TlsConfig['names'] = [];
  const skipped: { name: string; reason: string }[] = [];
  // a pair the ACME manager writes is skipped, not fatal, when it does not fit (a crash between
  // its two renames): the proxy starts, and the name is ordered again
  const managed = new Set(o.acme?.domains ?? []);
  if (o.dir !== undefined) {
    const dir = resolve(o.dir);
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch (e) {
      throw new Error(`--tls-dir ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    for (const f of entries.filter((x) => x.endsWith('.crt')).sort()) {
      const serverName = f.slice(0, -4).toLowerCase();
      if (!isValidHostPattern(serverName)) throw new Error(`--tls-dir ${dir}: "${f}" is not named after a hostname (shop.example.com.crt, *.example.com.crt)`);
      const pair = { serverName, cert: join(dir, f), key: join(dir, `${f.slice(0, -4)}.key`) };
      let checked: { cert: Buffer; key: Buffer };
      try {
        checked = checkPair(pair);
      } catch (e) {
        if (!managed.has(serverName)) throw e;
        skipped.push({ name: serverName, reason: (e as Error).message });
        continue;
      }
      bytes.push(checked);
      names.push(pair);
    }
  }
  const expiry = [{ name: 'default', notAfter: notAfter(bytes[0].cert) }, ...names.map((n, i) => ({ name: n.serverName, notAfter: notAfter(bytes[i + 1].cert) }))]
    .filter((e): e is { name: string; notAfter: string } => e.notAfter !== null);
  if (snapshot === undefined) return { default: def, names, expiry, skipped };
  // the certificates were fine; failing to copy them is the proxy's own trouble (a full disk), so
  // it is thrown marked `local` (the admin answers 500, not 422 "bad certificate")
  try {
    mkdirSync(snapshot, { recursive: true, mode: 0o700 });
    const copy = (i: number): CertFiles => {
      const files = { cert: join(snapshot, `${i}.crt`), key: join(snapshot, `${i}.key`) };
      writeFileSync(files.cert, bytes[i].cert, { mode: 0o600 });
      writeFileSync(files.key, bytes[i].key, { mode: 0o600 });
      return files;
    };
    return { default: copy(0), names: names.map((n, i) => ({ serverName: n.serverName, ...copy(i + 1) })), snapshot, expiry, skipped };
  } catch (e) {
    throw Object.assign(new Error(`could not keep a private copy of the certificates under ${snapshot}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`), { local: true });
  }
}
