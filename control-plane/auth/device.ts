import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Device cookies (OWASP's "slow down online guessing attacks with device cookies"): a browser that
 * signed in to an account gets `berth_device`, which proves it did, for that account, without
 * naming it: `v1.<nonce>.<mac>`, the MAC an HMAC-SHA256 of the account and the nonce under a key
 * derived from the session key. A login that presents one valid for the account it tries is from
 * a known device: the per-account limit on unknown clients does not apply to it.
 */
export const DEVICE_COOKIE = 'berth_device';
/** How long a device stays known after it last signed in. */
export const DEVICE_TTL_SECONDS = 365 * 24 * 3600;

export class DeviceCookies {
  private readonly key: Buffer;

  constructor(sessionKey: Uint8Array) {
    // its own key: a device cookie's MAC is never a valid session signature, nor the reverse
    this.key = createHmac('sha256', sessionKey).update('berth device cookie v1').digest();
  }

  private mac(account: string, nonce: string): string {
    return createHmac('sha256', this.key).update(`${account}\n${nonce}`).digest('base64url');
  }

  /** A new cookie value for `account` (normalised: trimmed, lower case). */
  issue(account: string): string {
    const nonce = randomBytes(12).toString('base64url');
    return `v1.${nonce}.${this.mac(account, nonce)}`;
  }

  /** Was `value` issued for `account`? Never throws. */
  valid(value: string | undefined, account: string): boolean {
    if (value === undefined || value.length > 200) return false;
    const m = /^v1\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$/.exec(value);
    if (m === null) return false;
    const want = Buffer.from(this.mac(account, m[1]));
    const got = Buffer.from(m[2]);
    return got.length === want.length && timingSafeEqual(got, want);
  }
}
