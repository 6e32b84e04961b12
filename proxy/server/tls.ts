import { createSecureContext } from 'node:tls';
import { readdirSync, readFileSync, statSync } from 'node:fs';
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

/** Throws naming the files unless the pair is a PEM certificate (chain) with its matching key. */
export function checkPair(pair: CertFiles): void {
  const cert = readPem(pair.cert, 'certificate');
  const key = readPem(pair.key, 'key');
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new Error(`${pair.cert} + ${pair.key}: ${(e as Error).message}`);
  }
}

/**
 * The default pair, and every `NAME.crt` + `NAME.key` in `dir` (NAME is the server name; a file
 * for a wildcard is named `*.example.com.crt`). A `.crt` without its `.key` is an error.
 */
export function loadTlsConfig(o: { cert: string; key: string; dir?: string }): TlsConfig {
  const def = { cert: resolve(o.cert), key: resolve(o.key) };
  checkPair(def);
  const names: TlsConfig['names'] = [];
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
      checkPair(pair);
      names.push(pair);
    }
  }
  return { default: def, names };
}
