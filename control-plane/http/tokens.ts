import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { tokenList } from '../../shared/token-list.js';
import { unauthorized } from './errors.js';

/**
 * Tokens the control plane checks itself (not user sessions): the proxy token and the metrics
 * token. Each is configured, else read from (or generated once into) a 0600 file in the data dir.
 * The value (or file) may list several tokens, separated by commas or whitespace: all are
 * accepted, so a token can be rotated without a moment where some proxy is refused — put the new
 * one first, move every proxy to it, then drop the old one. `token` is the first (current) one.
 */
export async function loadToken(configured: string | undefined, dataDir: string, fileName: string, prefix: string): Promise<{ token: string; tokens: string[]; file?: string }> {
  const listed = configured ? tokenList(configured) : [];
  if (listed.length) return { token: listed[0], tokens: listed };
  const file = join(dataDir, fileName);
  const existing = await readFile(file, 'utf8').then(tokenList, () => []);
  if (existing.length) return { token: existing[0], tokens: existing, file };
  const token = `${prefix}${randomBytes(24).toString('base64url')}`;
  await writeFile(file, token + '\n', { mode: 0o600, flag: 'wx' }).catch(async (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EEXIST') throw e;
  });
  // another process may have won the race to create it: the file is the truth
  const written = tokenList(await readFile(file, 'utf8'));
  if (!written.length) throw new Error(`${file} holds no token`);
  return { token: written[0], tokens: written, file };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Equal secrets, compared by digest in constant time (no length or prefix leaks through timing). */
export function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * Several accepted bearer tokens (see loadToken), checked in constant time: every candidate is
 * compared, whichever matches. `match` tells which one was presented (0 is the current one), so
 * the control plane can say which proxies still use a token being retired.
 */
export class BearerTokens {
  private readonly digests: Buffer[];

  constructor(readonly list: readonly string[]) {
    if (list.length === 0) throw new Error('at least one token is required');
    this.digests = list.map(digest);
  }

  /** The first token: the one to present (berth up's proxy, tests). */
  get current(): string {
    return this.list[0];
  }

  /** Index of the token an `Authorization: Bearer <token>` header presents, -1 for none. */
  match(header: string | undefined): number {
    const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) return -1;
    const d = digest(m[1]);
    let found = -1;
    for (let i = 0; i < this.digests.length; i++) if (timingSafeEqual(d, this.digests[i]) && found < 0) found = i;
    return found;
  }
}

/** Constant-time check of an `Authorization: Bearer <token>` header. */
export function isBearer(header: string | undefined, token: string | BearerTokens): boolean {
  return (typeof token === 'string' ? new BearerTokens([token]) : token).match(header) >= 0;
}

/**
 * An `onRequest` hook that refuses (401) a request without `Authorization: Bearer <token>`.
 * onRequest runs before the body is read, parsed and validated, so an unauthenticated upload costs
 * nothing; a refused request that announced a body gets `Connection: close`, so the rest of it is
 * not even drained.
 */
export function requireBearer(token: string | BearerTokens, message: string) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (isBearer(req.headers.authorization, token)) return;
    if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) reply.header('connection', 'close');
    throw unauthorized(message);
  };
}
