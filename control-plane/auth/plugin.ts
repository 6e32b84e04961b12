import { DEVICE_COOKIE, SESSION_COOKIE, cookieCount, cookieValues } from '../../shared/session-cookie.js';
import { sameSecret } from '../http/tokens.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from '../http/fp.js';
import { ApiError, conflict, notFound, unauthorized } from '../http/errors.js';
import { idParams, int } from '../http/schemas.js';
import { isUniqueViolation, withTransaction } from '../db/pool.js';
import { assertHashingRoom, dummyHash, verifyPassword } from './passwords.js';
import { DEVICE_TTL_SECONDS, DeviceCookies } from './device.js';
import { AddressLimiter, LoginThrottle, RateLimiter } from './rate-limit.js';
import { SharedLoginLimits } from './shared-limits.js';
import { Periodic } from '../periodic.js';
import { API_TOKEN_PREFIX, SessionTokens, loadJwtKey, newApiToken, sha256 } from './tokens.js';
import { createUser, findUserByEmail, findUserById, publicUser } from './users.js';
import { apiTokenListSchema, meSchema, newApiTokenSchema, sessionSchema } from './schemas.js';
import { errorResponses, noContent } from '../http/responses.js';

export { SESSION_COOKIE };

/** Live API tokens per user (409 `too_many_tokens` past it). */
const MAX_API_TOKENS = 100;

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Was this request sent by a page of this origin? Browsers send Sec-Fetch-Site (modern) or
 * Origin on cross-site state changes; non-browser clients (curl, scripts) send neither.
 */
function sameOrigin(req: FastifyRequest): boolean {
  const site = req.headers['sec-fetch-site'];
  if (typeof site === 'string') return site === 'same-origin' || site === 'none';
  const origin = req.headers.origin;
  if (typeof origin !== 'string') return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

/** The account an email names, as the login limits and device cookies key it (users.ts finds it case-insensitively). */
const accountOf = (email: string) => email.trim().toLowerCase();

const csrfRejected = () => new ApiError(403, 'csrf_rejected', 'cross-origin request with a session cookie refused; send Authorization: Bearer <token> or call from the same origin');

const EMAIL = { type: 'string', minLength: 3, maxLength: 254, pattern: '^[^\\s@]+@[^\\s@]+\\.[^\\s@]+$' } as const;
const PASSWORD = { type: 'string', minLength: 8, maxLength: 256 } as const;
const USERNAME = { type: 'string', minLength: 2, maxLength: 40, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' } as const;

interface TokenRow { id: number; name: string; prefix: string; created_at: Date; last_used_at: Date | null; expires_at: Date | null }
const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
const publicToken = (t: TokenRow) => ({ id: t.id, name: t.name, prefix: t.prefix, created_at: iso(t.created_at), last_used_at: iso(t.last_used_at), expires_at: iso(t.expires_at) });

/**
 * Accounts: signup, login (throttled per (account, address), per address, and per account for
 * clients that never signed in to it), logout, me; API tokens;
 * and `app.authenticate`, the preHandler every protected route uses.
 */
async function authPlugin(app: FastifyInstance): Promise<void> {
  const cfg = app.config;
  const jwtKey = await loadJwtKey(cfg.jwtSecret, cfg.dataDir);
  const sessions = new SessionTokens(jwtKey, cfg.sessionTtlSeconds);
  const devices = new DeviceCookies(jwtKey);
  const rl = cfg.loginRateLimit;
  // failed logins per address across accounts (credential stuffing): a fixed window; an IPv6
  // site has 65,536 /64s, so its /48 as a whole gets a few times one address's allowance on top
  const addresses = new AddressLimiter(rl.perIpMax, rl.perIpWindowMs, rl.maxTracked);
  // failed logins per (account, address): growing delays; the owner elsewhere is not slowed
  const throttle = new LoginThrottle({ freeFailures: rl.perAccountMax, baseDelayMs: rl.backoffBaseMs, maxDelayMs: rl.backoffMaxMs, forgetAfterMs: rl.perAccountWindowMs, maxKeys: rl.maxTracked });
  // failed logins per account from clients that never signed in to it (neither a device cookie
  // nor an address that did): one account guessed from many addresses. Known clients are not
  // refused by it, so such an attack does not lock the owner out of their usual machines.
  // Accounts by user id (`u:`), emails with no account by the email (`e:`): a made-up email
  // behaves as a real one (its own count: nothing tells the two apart). Counted in the database,
  // with the addresses that signed in, so every control plane on it counts together and a restart
  // forgets nothing (shared-limits.ts); windows that ended are swept every few minutes.
  const shared = new SharedLoginLimits(app.db, { max: rl.perAccountUnknownMax, windowMs: rl.perAccountUnknownWindowMs, knownForMs: rl.knownForMs, maxKeys: rl.maxTracked });
  const sweep = new Periodic(5 * 60_000, () => shared.sweep(), (e) => app.log.warn({ err: e.message }, 'could not sweep the login limits'));
  app.addHook('onReady', async () => sweep.start(10_000));
  // failed logins per device cookie (its nonce): past the free failures it is no longer known
  const deviceLimiter = new RateLimiter(rl.perAccountMax, rl.perAccountWindowMs, Date.now, rl.maxTracked);
  // signup hashes a password too (argon2 is deliberately expensive): same per-IP limit, its own counter
  const signups = new AddressLimiter(rl.perIpMax, rl.perIpWindowMs, rl.maxTracked);
  // changes per user (any write of the API): each is a transaction, an event, often a new route
  // table for every proxy — one tenant's loop must not make everyone's platform busy
  const writeLimiter = new RateLimiter(app.config.writesPerMinute, 60_000, Date.now, rl.maxTracked);
  app.addHook('onClose', async () => { addresses.close(); throttle.close(); signups.close(); writeLimiter.close(); deviceLimiter.close(); await sweep.stop(); });
  const tooMany = (wait: number, what: string) => new ApiError(429, 'too_many_requests', `too many ${what}; retry in ${wait}s`, { 'retry-after': String(wait) });

  const setSessionCookie = (reply: FastifyReply, token: string) => {
    // only /api: the proxy's /apps/{host}/ path form may share this host name (shared/session-cookie.ts);
    // one an older version set for / goes, as does one planted for /api/ (see authenticate)
    reply.setCookie(SESSION_COOKIE, token, { httpOnly: true, sameSite: 'lax', path: '/api', secure: cfg.secureCookies, maxAge: cfg.sessionTtlSeconds });
    for (const path of ['/', '/api/']) reply.clearCookie(SESSION_COOKIE, { path, httpOnly: true, sameSite: 'lax', secure: cfg.secureCookies });
  };

  /** After a sign-in: this browser (device cookie) and this address are known to the account. */
  const knownFromNowOn = async (req: FastifyRequest, reply: FastifyReply, account: string) => {
    // (the sign-in stands if this cannot be written: the address is then simply not known)
    await shared.remember(account, req.ip).catch((e: Error) => req.log.warn({ err: e.message }, 'could not remember the address of a sign-in'));
    reply.setCookie(DEVICE_COOKIE, devices.issue(account), { httpOnly: true, sameSite: 'strict', path: '/api/auth', secure: cfg.secureCookies, maxAge: DEVICE_TTL_SECONDS });
  };

  /** A session JWT that verifies and was not logged out: its user id. */
  const liveSession = async (token: string): Promise<number | undefined> => {
    const s = await sessions.verify(token);
    if (s === undefined) return undefined;
    const { rowCount } = await app.db.query('SELECT 1 FROM revoked_sessions WHERE jti = $1', [s.jti]);
    return rowCount ? undefined : s.userId;
  };

  app.decorate('authenticate', async (req: FastifyRequest) => {
    const header = req.headers.authorization;
    let userId: number | undefined;
    /** set when an API token authenticated the request */
    let tokenId: number | undefined;
    if (header !== undefined) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
      if (!m) throw unauthorized('Authorization header must be "Bearer <token>"');
      const token = m[1];
      if (token.startsWith(API_TOKEN_PREFIX)) {
        const { rows } = await app.db.query<{ id: number; user_id: number }>(
          `UPDATE api_tokens SET last_used_at = now()
           WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
           RETURNING id, user_id`, [sha256(token)]);
        userId = rows[0]?.user_id;
        tokenId = rows[0]?.id;
      } else {
        userId = await liveSession(token);
      }
      if (userId === undefined) throw unauthorized('invalid or expired token');
    } else {
      const cookie = req.cookies[SESSION_COOKIE];
      if (!cookie) throw unauthorized();
      // two of them: one was set by a page of another path on this host (an app's script can set
      // `berth_session=…; path=/api/` where the proxy shares the host name), and the browser sends
      // it first. Neither is trusted; signing in again replaces ours.
      if (cookieCount(req.headers.cookie, SESSION_COOKIE) > 1) throw unauthorized('more than one berth_session cookie was sent; clear this site\'s cookies and sign in again');
      // CSRF: apps berth hosts may live on sibling subdomains (same "site" for SameSite=Lax), so a
      // cookie alone does not authorise a state change; it must come from this origin.
      if (!SAFE_METHODS.has(req.method) && !sameOrigin(req)) throw csrfRejected();
      userId = await liveSession(cookie);
      if (userId === undefined) throw unauthorized('session expired; log in again');
    }
    const user = await findUserById(app.db, userId);
    if (!user) throw unauthorized('account no longer exists');
    if (!SAFE_METHODS.has(req.method)) {
      const key = String(user.id);
      const wait = writeLimiter.retryAfter(key);
      if (wait > 0) throw new ApiError(429, 'too_many_requests', `more than ${writeLimiter.max} changes in a minute from your account; retry in ${wait}s`, { 'retry-after': String(wait) });
      writeLimiter.hit(key);
    }
    const who = { id: user.id, email: user.email, username: user.username };
    req.user = tokenId === undefined ? { ...who, via: 'session' } : { ...who, via: 'api_token', tokenId };
    req.log = req.log.child({ userId: user.id });
  });

  app.post<{ Body: { email: string; password: string; username?: string; invite?: string } }>('/api/auth/signup', {
    schema: {
      summary: 'Create an account; answers the user and a session token (and sets the cookie)',
      tags: ['auth'],
      body: { type: 'object', required: ['email', 'password'], additionalProperties: false, properties: { email: EMAIL, password: PASSWORD, username: USERNAME, invite: { type: 'string', maxLength: 256, description: 'the invite code, when the platform takes signups by invitation' } } },
      response: { 201: sessionSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    if (cfg.signup === 'closed') throw new ApiError(403, 'signup_closed', 'this platform does not take new accounts; ask its operator for one');
    const wait = signups.retryAfter(req.ip);
    if (wait > 0) throw tooMany(wait, 'signups from this address');
    // (counted first: invite codes are guessed at the signup rate, no faster)
    signups.hit(req.ip);
    if (cfg.signup === 'invite' && !sameSecret(req.body.invite ?? '', cfg.signupInvite!)) {
      throw new ApiError(403, 'invite_required', 'this platform takes new accounts by invitation: send the invite code as "invite"');
    }
    const { email, password, username } = req.body;
    let user;
    try {
      user = await createUser(app.db, email.trim(), password, username ?? null);
    } catch (e) {
      if (isUniqueViolation(e, 'users_email_key')) throw conflict('an account with this email already exists', 'email_taken');
      if (isUniqueViolation(e, 'users_username_key')) throw conflict('this username is taken', 'username_taken');
      throw e;
    }
    const token = await sessions.sign(user.id);
    setSessionCookie(reply, token);
    await knownFromNowOn(req, reply, accountOf(email));
    req.log.info({ userId: user.id }, 'user signed up');
    return reply.code(201).send({ user: publicUser(user), token });
  });

  app.post<{ Body: { email: string; password: string } }>('/api/auth/login', {
    schema: {
      summary: 'Sign in with email and password; answers a session token (and sets the cookie)',
      tags: ['auth'],
      body: { type: 'object', required: ['email', 'password'], additionalProperties: false, properties: { email: { type: 'string', minLength: 1, maxLength: 254 }, password: { type: 'string', minLength: 1, maxLength: 256 } } },
      response: { 200: sessionSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const accountKey = accountOf(req.body.email);
    const ipWait = addresses.retryAfter(req.ip);
    if (ipWait > 0) throw tooMany(ipWait, 'failed logins from this address');
    const pairWait = throttle.check(accountKey, req.ip);
    if (pairWait > 0) {
      const s = Math.max(1, Math.ceil(pairWait / 1000));
      throw new ApiError(429, 'too_many_requests', `too many failed logins for this account from this address; retry in ${s}s (each further failure doubles the wait; a correct password from another address is not affected)`, { 'retry-after': String(s) });
    }
    assertHashingRoom();
    // Count the attempt as a failure before the (slow) password check, in the same tick as the
    // checks above: parallel attempts cannot all slip under the limits. A success takes it back,
    // and so does an attempt that was never judged (a failed lookup, 503 busy, the account limit).
    addresses.hit(req.ip);
    throttle.fail(accountKey, req.ip);
    const unjudged = () => {
      addresses.unhit(req.ip);
      throttle.unfail(accountKey, req.ip);
    };
    let user: Awaited<ReturnType<typeof findUserByEmail>>;
    try {
      user = await findUserByEmail(app.db, accountKey);
    } catch (e) {
      unjudged();
      throw e;
    }
    // Per account, clients that never signed in to it, counted after the lookup (see the tables
    // above). A device that keeps failing is no longer known.
    const device = devices.known(cookieValues(req.headers.cookie, DEVICE_COOKIE), accountKey);
    let limitKey: string | null;
    let wait: number;
    try {
      const known = (device !== null && deviceLimiter.retryAfter(device) === 0) || await shared.knows(accountKey, req.ip);
      limitKey = known ? null : user ? `u:${user.id}` : `e:${accountKey}`;
      wait = limitKey === null ? 0 : await shared.take(limitKey);
    } catch (e) {
      unjudged();
      throw e;
    }
    if (wait > 0) {
      unjudged();
      throw new ApiError(429, 'too_many_requests', `too many failed logins for this account from devices and addresses that never signed in to it; retry in ${wait}s (a browser or address that signed in to it before is not affected)`, { 'retry-after': String(wait) });
    }
    // (a failure counted that turns out not to be one is taken back: the login was right, or never judged)
    const giveBack = () => limitKey === null ? undefined : shared.giveBack(limitKey).catch((e: Error) => req.log.warn({ err: e.message }, 'could not take back a login failure'));
    let ok: boolean;
    try {
      ok = user ? await verifyPassword(user.password_hash, req.body.password) : (await verifyPassword(await dummyHash(), req.body.password), false);
    } catch (e) {
      // not judged (503 busy: too many sign-ins at once): not a failure either
      unjudged();
      await giveBack();
      throw e;
    }
    if (!user || !ok) {
      if (device !== null) deviceLimiter.hit(device);
      throw new ApiError(401, 'invalid_credentials', 'wrong email or password', { 'www-authenticate': 'Bearer realm="berth"' });
    }
    throttle.succeed(accountKey, req.ip);
    addresses.unhit(req.ip);
    await giveBack();
    const token = await sessions.sign(user.id);
    setSessionCookie(reply, token);
    await knownFromNowOn(req, reply, accountKey);
    return { user: publicUser(user), token };
  });

  // Revokes the session presented (Bearer session JWT or the cookie) until it would have expired,
  // and clears the cookie. API tokens are revoked with DELETE /api/auth/tokens/:id instead.
  // Like every cookie-authenticated change, a logout carried by the cookie alone must come from
  // this origin: otherwise any page (a sibling app's too) could log the user out.
  app.post('/api/auth/logout', { schema: { summary: 'Revoke the session presented and clear the cookie', tags: ['auth'], response: { ...noContent, ...errorResponses } } }, async (req, reply) => {
    if (req.headers.authorization === undefined && req.cookies[SESSION_COOKIE] && !sameOrigin(req)) throw csrfRejected();
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const presented = m && !m[1].startsWith(API_TOKEN_PREFIX) ? m[1] : req.cookies[SESSION_COOKIE];
    const s = presented ? await sessions.verify(presented) : undefined;
    if (s !== undefined) {
      await app.db.query(
        `INSERT INTO revoked_sessions (jti, user_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING`,
        [s.jti, s.userId, s.expiresAt],
      );
      await app.db.query('DELETE FROM revoked_sessions WHERE expires_at < now()');
    }
    reply.clearCookie(SESSION_COOKIE, { path: '/api', httpOnly: true, sameSite: 'lax', secure: cfg.secureCookies });
    // and one set for / by an older version
    reply.clearCookie(SESSION_COOKIE, { path: '/', httpOnly: true, sameSite: 'lax', secure: cfg.secureCookies });
    return reply.code(204).send();
  });

  app.get('/api/auth/me', { preHandler: app.authenticate, schema: { summary: 'Who you are, and how you authenticated', tags: ['auth'], response: { 200: meSchema, ...errorResponses } } }, async (req) => {
    const user = await findUserById(app.db, req.user!.id);
    if (!user) throw unauthorized();
    return { user: publicUser(user), auth: req.user!.via };
  });

  app.post<{ Body: { name: string; expires_in_days?: number } }>('/api/auth/tokens', {
    preHandler: app.authenticate,
    schema: {
      summary: 'Create an API token for scripts (shown once)',
      tags: ['auth'],
      body: { type: 'object', required: ['name'], additionalProperties: false, properties: {
        // printed by `berth tokens`: no control characters (a terminal would obey them)
        name: { type: 'string', minLength: 1, maxLength: 100, pattern: '^[^\\u0000-\\u001f\\u007f]+$' },
        expires_in_days: int(1, 3650),
      } },
      response: { 201: newApiTokenSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const t = newApiToken();
    const uid = req.user!.id;
    // made with an API token (not a session): it expires no later than that one and is revoked
    // with it, so a leaked short-lived token cannot mint itself a permanent one
    const parent = req.user!.via === 'api_token' ? req.user!.tokenId : null;
    const row = await withTransaction(app.db, async (tx) => {
      await tx.query('SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE', [uid]);
      let parentExpires: Date | null = null;
      if (parent !== null) {
        const { rows: [p] } = await tx.query<{ expires_at: Date | null }>(
          'SELECT expires_at FROM api_tokens WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) FOR SHARE', [parent, uid]);
        if (p === undefined) throw unauthorized('invalid or expired token');
        parentExpires = p.expires_at;
      }
      // revoked and expired tokens are of no use to anyone: they go (they piled up without end)
      await tx.query('DELETE FROM api_tokens WHERE user_id = $1 AND (revoked_at IS NOT NULL OR expires_at <= now())', [uid]);
      const { rows: [{ n }] } = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM api_tokens WHERE user_id = $1', [uid]);
      if (n >= MAX_API_TOKENS) throw conflict(`you have ${n} API tokens, the most allowed; revoke one first (DELETE /api/auth/tokens/:id)`, 'too_many_tokens');
      // (LEAST ignores NULLs: no expiry asked takes the parent's, a later one is cut to it)
      const { rows } = await tx.query<TokenRow>(
        `INSERT INTO api_tokens (user_id, name, token_hash, prefix, expires_at, parent_id)
         VALUES ($1, $2, $3, $4, LEAST(CASE WHEN $5::int IS NULL THEN NULL ELSE now() + make_interval(days => $5::int) END, $6::timestamptz), $7)
         RETURNING id, name, prefix, created_at, last_used_at, expires_at`,
        [uid, req.body.name, t.hash, t.prefix, req.body.expires_in_days ?? null, parentExpires, parent]);
      return rows[0];
    });
    return reply.code(201).send({ ...publicToken(row), token: t.token });
  });

  app.get('/api/auth/tokens', { preHandler: app.authenticate, schema: { summary: 'List your API tokens (without secrets)', tags: ['auth'], response: { 200: apiTokenListSchema, ...errorResponses } } }, async (req) => {
    const { rows } = await app.db.query<TokenRow>(
      `SELECT id, name, prefix, created_at, last_used_at, expires_at FROM api_tokens
       WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id`, [req.user!.id]);
    return { tokens: rows.map(publicToken) };
  });

  app.delete<{ Params: { id: number } }>('/api/auth/tokens/:id', {
    preHandler: app.authenticate,
    schema: { summary: 'Revoke an API token, and the tokens made with it', tags: ['auth'], params: idParams(), response: { ...noContent, ...errorResponses } },
  }, async (req, reply) => {
    // the token and every token made with it, and with those, … — under the user's row lock, which
    // making a token takes too: a child made meanwhile is either seen here or made after (and then
    // refused, its parent revoked)
    const uid = req.user!.id;
    const res = await withTransaction(app.db, async (tx) => {
      await tx.query('SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE', [uid]);
      return tx.query(
        `WITH RECURSIVE gone AS (
           SELECT id FROM api_tokens WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
           UNION SELECT c.id FROM api_tokens c JOIN gone ON c.parent_id = gone.id WHERE c.user_id = $2 AND c.revoked_at IS NULL
         )
         UPDATE api_tokens SET revoked_at = now() WHERE id IN (SELECT id FROM gone)`, [req.params.id, uid]);
    });
    if (!res.rowCount) throw notFound('token');
    return reply.code(204).send();
  });
}

export default fp(authPlugin, 'berth-auth');
