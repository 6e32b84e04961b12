import type { Queryable } from '../db/pool.js';
import { hashPassword } from './passwords.js';

export interface UserRow {
  id: number;
  email: string;
  username: string | null;
  password_hash: string;
  created_at: Date;
}

export function publicUser(u: Pick<UserRow, 'id' | 'email' | 'username' | 'created_at'>) {
  return { id: u.id, email: u.email, username: u.username, created_at: new Date(u.created_at).toISOString() };
}

export async function findUserByEmail(q: Queryable, email: string): Promise<UserRow | undefined> {
  const { rows } = await q.query<UserRow>('SELECT * FROM users WHERE lower(email) = lower($1)', [email]);
  return rows[0];
}

export async function findUserById(q: Queryable, id: number): Promise<UserRow | undefined> {
  const { rows } = await q.query<UserRow>('SELECT * FROM users WHERE id = $1', [id]);
  return rows[0];
}

export async function createUser(q: Queryable, email: string, password: string, username: string | null): Promise<UserRow> {
  const hash = await hashPassword(password);
  const { rows } = await q.query<UserRow>(
    'INSERT INTO users (email, username, password_hash) VALUES ($1, $2, $3) RETURNING *',
    [email.toLowerCase(), username, hash],
  );
  return rows[0];
}

export const DEFAULT_USER = { email: 'example@gmail.com', password: 'example123', username: 'example' };

/** Create the default user when the users table is empty. Returns true when it did. */
export async function seedDefaultUser(q: Queryable): Promise<boolean> {
  const { rows } = await q.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
  if (rows[0].n > 0) return false;
  const hash = await hashPassword(DEFAULT_USER.password);
  const res = await q.query(
    `INSERT INTO users (email, username, password_hash) SELECT $1, $2, $3
     WHERE NOT EXISTS (SELECT 1 FROM users) ON CONFLICT DO NOTHING`,
    [DEFAULT_USER.email, DEFAULT_USER.username, hash],
  );
  return (res.rowCount ?? 0) > 0;
}
