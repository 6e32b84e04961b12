import { dateTime, idSchema, nullableDateTime, nullableString, object } from '../http/responses.js';

/**
 * Response schemas of the auth routes. `userSchema` is `publicUser` (users.ts): the handlers read
 * the whole users row (`SELECT *`, password hash included), and this schema is what keeps
 * anything but these four properties out of an answer.
 */
export const userSchema = object({
  id: idSchema,
  email: { type: 'string' },
  username: nullableString,
  created_at: dateTime,
});

/** signup (201) and login (200): the user and a session JWT (also set as the berth_session cookie). */
export const sessionSchema = object({ user: userSchema, token: { type: 'string', description: 'session JWT: Authorization: Bearer <token>' } });

export const meSchema = object({
  user: userSchema,
  auth: { type: 'string', enum: ['session', 'api_token'], description: 'how this request authenticated' },
});

/** An API token without its secret (`publicToken`). */
export const apiTokenSchema = object({
  id: idSchema,
  name: { type: 'string' },
  prefix: { type: 'string', description: 'the first characters of the token, to tell tokens apart' },
  created_at: dateTime,
  last_used_at: nullableDateTime,
  expires_at: nullableDateTime,
});

/** `POST /api/auth/tokens`: the new token, with its secret (the only time it is shown). */
export const newApiTokenSchema = object({
  ...apiTokenSchema.properties,
  token: { type: 'string', description: 'berth_…: shown once; only its hash is stored' },
});

export const apiTokenListSchema = object({ tokens: { type: 'array', items: apiTokenSchema } });
