import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { unauthorized } from './errors.js';

/**
 * Tokens the control plane checks itself (not user sessions): the proxy token and the metrics
 * token. Each is configured, else read from (or generated once into) a 0600 file in the data dir.
 */
export async function loadToken(configured: string | undefined, dataDir: string, fileName: string, prefix: string): Promise<{ token: string; file?: string }> {
  if (configured) return { token: configured };
  const file = join(dataDir, fileName);
  const existing = await readFile(file, 'utf8').then((s) => s.trim(), () => '');
  if (existing) return { token: existing, file };
  const token = `${prefix}${randomBytes(24).toString('base64url')}`;
  await writeFile(file, token + '\n', { mode: 0o600, flag: 'wx' }).catch(async (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EEXIST') throw e;
  });
  // another process may have won the race to create it: the file is the truth
  const written = await readFile(file, 'utf8').then((s) => s.trim());
  return { token: written, file };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time check of an `Authorization: Bearer <token>` header. */
export function isBearer(header: string | undefined, token: string): boolean {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return !!m && timingSafeEqual(digest(m[1]), digest(token));
}

/**
 * An `onRequest` hook that refuses (401) a request without `Authorization: Bearer <token>`.
 * onRequest runs before the body is read, parsed and validated, so an unauthenticated upload costs
 * nothing; a refused request that announced a body gets `Connection: close`, so the rest of it is
 * not even drained.
 */
export function requireBearer(token: string, message: string) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (isBearer(req.headers.authorization, token)) return;
    if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) reply.header('connection', 'close');
    throw unauthorized(message);
  };
}
