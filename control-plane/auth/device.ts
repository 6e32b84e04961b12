import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
/**
 * Device cookies (OWASP's "slow down online guessing attacks with device cookies"): a client that
 * signed in to an account gets `berth_device`, which proves it did, for that account, without
 * naming it: `v1.<issued, unix seconds>.<nonce>.<mac>`, the MAC an HMAC-SHA256 of the account, the
 * time and the nonce under a key derived from the session key. A login presenting one valid for
 * the account it tries, issued less than DEVICE_TTL_SECONDS ago, is from a known device: the
 * per-account limit on unknown clients does not apply to it (auth/plugin.ts), until that device
 * itself fails too often (its nonce is counted, so a leaked cookie is no pass for a botnet).
 */
/** How long a device stays known after it last signed in (the cookie's Max-Age, and checked here). */
export const DEVICE_TTL_SECONDS = 365 * 24 * 3600;

export class DeviceCookies {
  private readonly key: Buffer;

  constructor(sessionKey: Uint8Array, private readonly now: () => number = Date.now) {
    // its own key: a device cookie's MAC is never a valid session signature, nor the reverse
    this.key = createHmac('sha256', sessionKey).update('berth device cookie v1').digest();
  }

  private mac(account: string, issued: string, nonce: string): string {
    return createHmac('sha256', this.key).update(`${account}\n${issued}\n${nonce}`).digest('base64url');
  }

  /** A new cookie value for `account` (normalised: trimmed, lower case). */
  issue(account: string): string {
    const issued = String(Math.floor(this.now() / 1000));
    const nonce = randomBytes(12).toString('base64url');
    return `v1.${issued}.${nonce}.${this.mac(account, issued, nonce)}`;
  }

  /** The nonce of the first of `values` issued for `account` and not expired, else null. Never throws. */
  known(values: readonly string[], account: string): string | null {
    const now = this.now() / 1000;
    for (const value of values.slice(0, 8)) {
      const m = /^v1\.(\d{1,12})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$/.exec(value);
      if (m === null) continue;
      const age = now - Number(m[1]);
      if (age > DEVICE_TTL_SECONDS || age < -300) continue;
      const want = Buffer.from(this.mac(account, m[1], m[2]));
      const got = Buffer.from(m[3]);
      if (got.length === want.length && timingSafeEqual(got, want)) return m[2];
    }
    return null;
  }
}
