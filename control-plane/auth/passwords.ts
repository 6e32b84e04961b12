import { hash, verify, Algorithm } from '@node-rs/argon2';
import { ApiError } from '../http/errors.js';

// OWASP-recommended argon2id parameters (19 MiB, 2 passes).
const OPTS = { algorithm: Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

/**
 * Password hashing is deliberately expensive and runs on libuv's thread pool (4 threads), which
 * file I/O and DNS lookups share. Logins and signups from many addresses at once (every unknown
 * email is hashed too) must not take all of it: at most MAX_HASHING hash at once, at most
 * MAX_WAITING wait their turn, and past that the request is 503 `busy` with Retry-After.
 */
export const MAX_HASHING = 2;
export const MAX_WAITING = 64;
let hashing = 0;
const waiting: (() => void)[] = [];

/** Runs `work` in a hashing slot: at once, after those waiting, or 503 busy when the queue is full. */
export async function inTurn<T>(work: () => Promise<T>): Promise<T> {
  if (hashing < MAX_HASHING) hashing++;
  else {
    if (waiting.length >= MAX_WAITING) throw new ApiError(503, 'busy', 'too many sign-ins at once; try again in a moment', { 'retry-after': '1' });
    await new Promise<void>((resolve) => waiting.push(resolve)); // woken with the slot of the one that ended
  }
  try {
    return await work();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else hashing--;
  }
}

/**
 * Throws 503 busy when a hash asked for now could not even wait its turn: a sign-in checks it
 * before its database work, so a flood answered busy costs no queries.
 */
export function assertHashingRoom(): void {
  if (hashing >= MAX_HASHING && waiting.length >= MAX_WAITING) throw new ApiError(503, 'busy', 'too many sign-ins at once; try again in a moment', { 'retry-after': '1' });
}

/** Hashes running and waiting now (for tests). */
export function hashingNow(): { running: number; waiting: number } {
  return { running: hashing, waiting: waiting.length };
}

export function hashPassword(password: string): Promise<string> {
  return inTurn(() => hash(password, OPTS));
}

export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  return inTurn(async () => {
    try { return await verify(stored, password); } catch { return false; }
  });
}

/** A valid hash of a random password: verified against when the account does not exist, so timing does not reveal it. */
let dummy: Promise<string> | undefined;
export function dummyHash(): Promise<string> {
  dummy ??= hashPassword(`no-such-user-${Math.random()}`);
  dummy.catch(() => { dummy = undefined; });
  return dummy;
}
