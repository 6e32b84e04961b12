import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import pg from 'pg';
import { isDatabaseUnreachable } from '../db/pool.js';

/**
 * An error that maps to an API response:
 * `{"error":{"code":"snake_case","message":"…","requestId":"…"}}` with `status`.
 */
export class ApiError extends Error {
  constructor(
    public readonly status: number,
    public readonly code: string,
    message: string,
    public readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (message: string, code = 'invalid_request') => new ApiError(400, code, message);
export const notFound = (what = 'resource') => new ApiError(404, 'not_found', `${what} not found`);
export const conflict = (message: string, code = 'conflict') => new ApiError(409, code, message);
/** 401 with the challenge RFC 9110 requires (RFC 6750 Bearer). */
export const unauthorized = (message = 'authentication required') => new ApiError(401, 'unauthorized', message, { 'www-authenticate': 'Bearer realm="berth"' });

export function sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).type('application/json; charset=utf-8').send({ error: { code, message, requestId: String(reply.request.id) } });
}

const CODES: Record<number, string> = {
  400: 'invalid_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 405: 'method_not_allowed',
  406: 'not_acceptable', 409: 'conflict', 413: 'payload_too_large', 415: 'unsupported_media_type', 429: 'too_many_requests',
};

function validationMessage(err: FastifyError): string {
  const v = err.validation?.[0];
  if (!v) return err.message;
  const where = err.validationContext ?? 'body';
  const path = v.instancePath ? v.instancePath.replace(/^\//, '').replace(/\//g, '.') : '';
  const params = v.params as Record<string, unknown>;
  if (v.keyword === 'required') return `${where}.${params.missingProperty} is required`;
  if (v.keyword === 'additionalProperties') return `${where}${path ? '.' + path : ''}: unknown field "${params.additionalProperty}"`;
  return `${where}${path ? '.' + path : ''} ${v.message ?? 'is invalid'}`;
}

/** Installs the error handler, the 404 handler and the x-request-id response header. */
export function installErrorHandling(app: FastifyInstance): void {
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', String(req.id));
  });
  app.setNotFoundHandler((req: FastifyRequest, reply: FastifyReply) => {
    sendError(reply, 404, 'not_found', `no route for ${req.method} ${req.url.split('?')[0]}`);
  });
  app.setErrorHandler((err: FastifyError | ApiError, req, reply) => {
    if (err instanceof ApiError) {
      for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
      return sendError(reply, err.status, err.code, err.message);
    }
    const fe = err as FastifyError;
    if (fe.validation) return sendError(reply, 400, 'invalid_request', validationMessage(fe));
    // Safety net behind the schemas (http/schemas.ts): a value Postgres cannot hold (class 22,
    // "data exception": out of range, not a number, …) came from the request, so it is the
    // client's 400, not a 500. Logged, because a schema should have caught it first.
    if (err instanceof pg.DatabaseError && err.code?.startsWith('22')) {
      req.log.warn({ err, pgCode: err.code }, 'a value reached the database that it cannot hold');
      // 22P05/22021: text Postgres cannot store, in practice a NUL character (\u0000) in a string
      const why = err.code === '22P05' || err.code === '22021'
        ? 'a text value in the request holds a character that cannot be stored (NUL, \\u0000); remove it'
        : 'a value in the request is out of range';
      return sendError(reply, 400, 'invalid_request', why);
    }
    // the database too busy: a statement past its timeout, or no pooled connection in time — the
    // request was fine, the moment was not (503 with Retry-After, not a 500)
    if ((err instanceof pg.DatabaseError && err.code === '57014') || /timeout exceeded when trying to connect/i.test(fe.message ?? '')) {
      req.log.warn({ err }, 'database busy');
      reply.header('retry-after', '5');
      return sendError(reply, 503, 'busy', 'the database is busy; try again in a moment');
    }
    // the database away for a moment: restarting, failing over (read-only), out of connections, a
    // connection dropped — nothing wrong with the request either. Only the database's own errors
    // (a reset of a client's upload or of Docker's socket is not the database's; a deadlock is a
    // bug, a 500)
    if (databaseAway(err) && !(fe.statusCode !== undefined && fe.statusCode < 500)) {
      req.log.warn({ err }, 'database unavailable');
      reply.header('retry-after', '5');
      return sendError(reply, 503, 'unavailable', 'the database is unavailable for a moment; try again shortly');
    }
    const status = fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 600 ? fe.statusCode : 500;
    if (status >= 500) {
      req.log.error({ err }, 'request failed');
      return sendError(reply, status, 'internal_error', 'internal server error');
    }
    return sendError(reply, status, CODES[status] ?? 'invalid_request', fe.message);
  });
}

/**
 * Fastify's own refusals before any route runs (its `frameworkErrors`): a URL whose
 * percent-encoding is not UTF-8, a path segment past `maxParamLength`. In the API's error shape
 * like every other answer (Fastify's default is a shape of its own), without echoing the URL.
 */
export function answerFrameworkError(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  reply.header('x-request-id', String(req.id));
  if (err.code === 'FST_ERR_BAD_URL') {
    sendError(reply, 400, 'invalid_request', 'the URL path holds a percent-encoding that is not UTF-8 text');
  } else if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    sendError(reply, 414, 'uri_too_long', 'a segment of the URL path is longer than any identifier here (300 characters)');
  } else {
    req.log.error({ err }, 'request failed before routing');
    sendError(reply, 500, 'internal_error', 'internal server error');
  }
}

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Keep a sane incoming x-request-id, otherwise make one. */
export function genRequestId(header: string | string[] | undefined, fallback: () => string): string {
  const v = Array.isArray(header) ? header[0] : header;
  return v && SAFE_ID.test(v) ? v : fallback();
}

/** The database's SQLSTATEs for "not now": connection exceptions, shutting down or starting, too many connections, read-only. */
const AWAY = /^(08...|57P0[123]|53300|25006)$/;

/**
 * Is this error the database being away for a moment: its own SQLSTATE, a connection the pool
 * could not open (refused while it restarts), or the pg client's lost connection?
 */
function databaseAway(err: unknown): boolean {
  if (err instanceof pg.DatabaseError) return AWAY.test(err.code ?? '');
  if (isDatabaseUnreachable(err)) return true;
  const message = (err as { message?: unknown }).message;
  return typeof message === 'string' && /^(Connection terminated|Client was closed and is not queryable)/.test(message);
}
