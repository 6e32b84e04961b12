import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { createSecureContext } from 'node:tls';
import { join } from 'node:path';
import * as acme from 'acme-client';
import type { Logger } from '../../shared/logging.js';

/** Renewed this long before it expires (Let's Encrypt's certificates last 90 days; it advises 30). */
const RENEW_BEFORE_MS = 30 * 86_400_000;
/** How often the certificates are looked at. */
const CHECK_EVERY_MS = 12 * 3_600_000;
/**
 * A failed order is tried again after this long, doubling to CHECK_EVERY_MS: Let's Encrypt allows
 * 5 failed validations per name and account an hour.
 */
const RETRY_FIRST_MS = 10 * 60_000;
/** An order that has not ended by then has failed (a CA that stopped answering). */
const ORDER_DEADLINE_MS = 10 * 60_000;
const RELOAD_FAILED = 'the new certificates could not be loaded';
/** Largest certificate chain taken from a CA (a few certificates are a few KiB). */
const MAX_CHAIN_BYTES = 1024 * 1024;

// the CA's answers: bounded in time and size, no redirects (one could lead from https to http)
acme.axios.defaults.timeout = 30_000;
acme.axios.defaults.maxContentLength = MAX_CHAIN_BYTES;
acme.axios.defaults.maxBodyLength = MAX_CHAIN_BYTES;
acme.axios.defaults.maxRedirects = 0;

export interface AcmeOptions {
  /** the names to hold certificates for (each its own certificate, proven by HTTP-01) */
  domains: string[];
  /** the account's contact */
  email: string;
  /** the CA's ACME directory URL (default: Let's Encrypt's) */
  directory?: string;
}

export interface AcmeStatus {
  domain: string;
  /** when the certificate held expires (null: none yet) */
  notAfter: string | null;
  lastError: string | null;
  /** when an order was last made for it */
  lastOrder: string | null;
}

/**
 * Certificates from an ACME CA (Let's Encrypt, ZeroSSL, a company's own step-ca…) for the names
 * the operator lists, as Caddy and Traefik get them: each proven by HTTP-01 — the CA fetches
 * `http://NAME/.well-known/acme-challenge/TOKEN` and the plain listener answers it
 * (server/acme-challenge.ts) — written into the TLS directory as `NAME.crt` + `NAME.key`, the
 * layout SNI selection reads, then the listeners reload. Looked at on start and every 12 hours;
 * renewed 30 days before expiry; a failed order is tried again after a minute, doubling.
 *
 * The ACME protocol (RFC 8555: account, order, authorizations, finalize, JWS) is acme-client's;
 * what is here is which names, when, and where the results go.
 */
export class AcmeManager {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private retryMs = 0;
  private readonly status = new Map<string, AcmeStatus>();
  private client: acme.Client | null = null;
  /** certificates written but not yet served (the reload failed): reloaded at the next check */
  private reloadPending = false;

  constructor(
    private readonly o: AcmeOptions,
    /** where NAME.crt and NAME.key go (the TLS listener's --tls-dir) */
    private readonly certDir: string,
    /** where the account key is kept */
    private readonly stateDir: string,
    private readonly log: Logger,
    /** put (or, with null, take away) an HTTP-01 answer on every listener thread */
    private readonly setChallenge: (token: string, answer: string | null) => Promise<void>,
    /** read the TLS directory again (new certificates served) */
    private readonly reload: () => Promise<unknown>,
  ) {
    for (const d of o.domains) this.status.set(d, { domain: d, notAfter: this.expiry(d)?.toISOString() ?? null, lastError: null, lastOrder: null });
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    // (an order under way ends with the process: the CA's polling can take minutes)
    if (this.running !== null) await Promise.race([this.running.catch(() => {}), new Promise((r) => setTimeout(r, 2000).unref())]);
  }

  /** Each name's certificate and the last order's outcome (the admin's /stats). */
  list(): AcmeStatus[] {
    return [...this.status.values()].map((s) => ({ ...s }));
  }

  /** Order what is missing or due now (what the timer runs); resolves when done. */
  private check(): Promise<void> {
    this.running ??= this.checkAll().finally(() => { this.running = null; });
    return this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.check().then(() => {
        const failed = [...this.status.values()].some((s) => s.lastError !== null);
        this.retryMs = failed ? Math.min(CHECK_EVERY_MS, this.retryMs === 0 ? RETRY_FIRST_MS : this.retryMs * 2) : 0;
        this.schedule(failed ? this.retryMs : CHECK_EVERY_MS);
      });
    }, ms);
    this.timer.unref();
  }

  private async checkAll(): Promise<void> {
    const issued: string[] = [];
    for (const d of this.o.domains) {
      if (this.stopped) break;
      const st = this.status.get(d)!;
      const exp = this.expiry(d);
      if (exp !== null && exp.getTime() - Date.now() > RENEW_BEFORE_MS) {
        st.notAfter = exp.toISOString();
        if (!this.reloadPending) st.lastError = null;
        continue;
      }
      st.lastOrder = new Date().toISOString();
      try {
        await withDeadline(this.order(d), ORDER_DEADLINE_MS, `the CA did not finish the order within ${ORDER_DEADLINE_MS / 60_000} minutes`);
        st.notAfter = this.expiry(d)?.toISOString() ?? null;
        st.lastError = null;
        issued.push(d);
        this.log.info({ domain: d, notAfter: st.notAfter }, 'ACME: certificate issued');
      } catch (e) {
        st.lastError = (e as Error).message;
        this.log.error({ domain: d, err: st.lastError }, 'ACME: could not get a certificate (tried again later)');
      }
    }
    if (issued.length > 0 || this.reloadPending) {
      try {
        await this.reload();
        if (this.reloadPending) for (const st of this.status.values()) if (st.lastError?.startsWith(RELOAD_FAILED)) st.lastError = null;
        this.reloadPending = false;
      } catch (e) {
        // on disk, not served: the next check (on the failure schedule) reloads again
        this.reloadPending = true;
        const err = `${RELOAD_FAILED}: ${(e as Error).message}`;
        for (const st of this.status.values()) st.lastError = err;
        this.log.error({ err }, 'ACME: the new certificates could not be loaded (tried again later)');
      }
    }
  }

  /** When the certificate held for `domain` expires (null: none, or not a pair that can be served: ordered again). */
  private expiry(domain: string): Date | null {
    const cert = join(this.certDir, `${domain}.crt`);
    const key = join(this.certDir, `${domain}.key`);
    if (!existsSync(cert) || !existsSync(key)) return null;
    try {
      return checkIssued(readFileSync(cert), readFileSync(key), domain);
    } catch {
      return null;
    }
  }

  private async account(): Promise<acme.Client> {
    if (this.client !== null) return this.client;
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const file = join(this.stateDir, 'account.key');
    let key: Buffer;
    if (existsSync(file)) key = readFileSync(file);
    else {
      key = await acme.crypto.createPrivateEcdsaKey();
      await writeFileAtomic(file, key, 0o600);
    }
    this.client = new acme.Client({ directoryUrl: this.o.directory ?? acme.directory.letsencrypt.production, accountKey: key });
    return this.client;
  }

  private async order(domain: string): Promise<void> {
    const client = await this.account();
    const key = await acme.crypto.createPrivateEcdsaKey();
    const [, csr] = await acme.crypto.createCsr({ commonName: domain, altNames: [domain] }, key);
    const cert = await client.auto({
      csr,
      email: this.o.email,
      // (ordering from a CA is accepting its terms: the operator chose the CA)
      termsOfServiceAgreed: true,
      challengePriority: ['http-01'],
      // the CA's own fetch is the proof; the client's self-check would need this host to reach
      // itself by its public name (NAT, split DNS)
      skipChallengeVerification: true,
      challengeCreateFn: (_authz, challenge, keyAuthorization) => this.setChallenge(challenge.token, keyAuthorization),
      challengeRemoveFn: (_authz, challenge) => this.setChallenge(challenge.token, null),
    });
    if (Buffer.byteLength(cert) > MAX_CHAIN_BYTES) throw new Error(`the CA's certificate chain is larger than ${MAX_CHAIN_BYTES} bytes`);
    // what the CA sent is served only if it is a certificate for this name that fits the key
    checkIssued(Buffer.from(cert), key, domain);
    // the pair replaces the old one file by file, each whole (shared/atomic-file.ts). A crash
    // between the two leaves a pair that does not fit: the TLS loader skips it (tls.ts, `acme`)
    // and it is ordered again.
    await writeFileAtomic(join(this.certDir, `${domain}.key`), key, 0o600);
    await writeFileAtomic(join(this.certDir, `${domain}.crt`), cert, 0o644);
  }
}

/** The certificate's expiry, if it is one for `domain`, not expired, whose key is `key`; throws saying why not. */
function checkIssued(cert: Buffer, key: Buffer, domain: string): Date {
  const x = new X509Certificate(cert);
  if (x.checkHost(domain) === undefined) throw new Error(`the certificate is not for ${domain}`);
  const end = new Date(x.validTo);
  if (!(end.getTime() > Date.now())) throw new Error(`the certificate for ${domain} has expired`);
  createSecureContext({ cert, key });
  return end;
}

/** `p`, or a rejection with `why` after `ms` (the work goes on, its outcome unused). */
function withDeadline<T>(p: Promise<T>, ms: number, why: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const deadline = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(why)), ms); timer.unref(); });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}
