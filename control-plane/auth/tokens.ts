import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT, jwtVerify } from 'jose';
import { UsageError } from '../../shared/cli/args.js';

export const API_TOKEN_PREFIX = 'berth_';

/** A new API token: the clear value (shown once) and what is stored. */
export function newApiToken(): { token: string; hash: string; prefix: string } {
  const token = API_TOKEN_PREFIX + randomBytes(32).toString('base64url');
  return { token, hash: sha256(token), prefix: token.slice(0, API_TOKEN_PREFIX.length + 6) };
}

export function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** JWT key: BERTH_JWT_SECRET, or a random one generated once into DATA_DIR/jwt-secret. */
export async function loadJwtKey(configured: string | undefined, dataDir: string): Promise<Uint8Array> {
  if (configured) return new TextEncoder().encode(configured);
  const file = join(dataDir, 'jwt-secret');
  if (!existsSync(file)) {
    await mkdir(dataDir, { recursive: true });
    // written whole, then linked into place: another control plane starting on this directory
    // sees no file or a whole one (never an empty one), and the first link wins
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await writeFile(tmp, randomBytes(48).toString('base64url') + '\n', { mode: 0o600 });
    try {
      await link(tmp, file).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }
  const s = (await readFile(file, 'utf8')).trim();
  // a short key (an edited or truncated file) would let sessions be forged by guessing it: refused,
  // as a short BERTH_JWT_SECRET is
  if (Buffer.byteLength(s) < 32) {
    throw new UsageError(`${file} holds a key of ${Buffer.byteLength(s)} bytes; it must be at least 32 (delete the file to have a new one generated; every session ends)`);
  }
  return new TextEncoder().encode(s);
}

export class SessionTokens {
  constructor(private readonly key: Uint8Array, private readonly ttlSeconds: number) {}

  sign(userId: number): Promise<string> {
    return new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(String(userId))
      .setIssuer('berth')
      .setAudience('berth-api')
      .setIssuedAt()
      .setExpirationTime(`${this.ttlSeconds}s`)
      .setJti(randomBytes(12).toString('base64url'))
      .sign(this.key);
  }

  /** User id, session id and expiry, or undefined for an invalid/expired token. */
  async verify(token: string): Promise<{ userId: number; jti: string; expiresAt: Date } | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.key, { issuer: 'berth', audience: 'berth-api', algorithms: ['HS256'] });
      const id = Number(payload.sub);
      if (!Number.isSafeInteger(id) || id <= 0 || typeof payload.jti !== 'string' || typeof payload.exp !== 'number') return undefined;
      return { userId: id, jti: payload.jti, expiresAt: new Date(payload.exp * 1000) };
    } catch {
      return undefined;
    }
  }
}
