// Users, passwords and sessions for the dashboards.
//
// Passwords: scrypt in the platform's one format (contract/secrets.ts), compared in constant time.
// Sessions: a random 32-byte token handed to the browser (HttpOnly cookie) and to API clients
// (bearer); the database keeps only its SHA-256, so the sessions table cannot be replayed.
// Each session also has a CSRF token that a cookie-authenticated mutation must echo in a header.

import { createHash, randomBytes } from 'node:crypto';
import { hashSecret, parseOrgPath, verifyNothing, verifySecret, type Clock } from '../contract/index.ts';
import type { Db, Queryable } from '../ingest/db.ts';

export const ROLES = ['desk', 'tech', 'author', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface User {
  username: string;
  role: Role;
  orgPath: string;
  displayName: string;
}

export interface Session {
  user: User;
  csrfToken: string;
  expiresAt: number;
}

// Passwords use the platform's one secret format (contract/secrets.ts).
export const hashPassword = hashSecret;
export const verifyPassword = verifySecret;

export class UserInputError extends Error {
  constructor(message: string, readonly field: string) {
    super(message);
    this.name = 'UserInputError';
  }
}

export interface SeedUserInput {
  username: string;
  password: string;
  role: Role;
  orgPath: string;
  displayName?: string;
}

/**
 * Create or update a dashboard user (idempotent: seeding twice updates password, role and scope).
 * Throws UserInputError naming the field that is wrong.
 */
export async function seedUser(db: Queryable, input: SeedUserInput): Promise<User> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(input.username)) {
    throw new UserInputError(`username "${input.username}" must be 1–64 letters, digits, . _ -`, 'username');
  }
  if (!ROLES.includes(input.role)) {
    throw new UserInputError(`role "${input.role}" must be one of ${ROLES.join(', ')}`, 'role');
  }
  if (typeof input.password !== 'string' || input.password.length < 8) {
    throw new UserInputError('password must be at least 8 characters', 'password');
  }
  parseOrgPath(input.orgPath); // throws OrgCodeError naming the wrong segment
  const hash = await hashPassword(input.password);
  await db.query(
    `insert into users (username, password_hash, role, org_path, display_name)
     values ($1, $2, $3, $4, $5)
     on conflict (username) do update set password_hash = excluded.password_hash, role = excluded.role,
       org_path = excluded.org_path, display_name = excluded.display_name, disabled = false, updated_at = now()`,
    [input.username, hash, input.role, input.orgPath, input.displayName ?? input.username],
  );
  return { username: input.username, role: input.role, orgPath: input.orgPath, displayName: input.displayName ?? input.username };
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export interface SessionStore {
  /** Checks the password; returns the user or null (same timing for unknown users). */
  authenticate(username: string, password: string): Promise<User | null>;
  create(user: User): Promise<{ token: string; csrfToken: string; expiresAt: number }>;
  lookup(token: string): Promise<Session | null>;
  destroy(token: string): Promise<void>;
}

export function createSessionStore(db: Db, clock: Clock, ttlMs = 12 * 3600_000): SessionStore {
  let lastSweep = 0;
  return {
    async authenticate(username, password) {
      const r = await db.query<{ username: string; password_hash: string; role: Role; org_path: string; display_name: string; disabled: boolean }>(
        'select username, password_hash, role, org_path, display_name, disabled from users where username = $1',
        [username],
      );
      const row = r.rows[0];
      if (!row) {
        await verifyNothing(password); // an unknown user costs the same time as a wrong password
        return null;
      }
      const ok = await verifyPassword(password, row.password_hash);
      if (!ok || row.disabled) return null;
      return { username: row.username, role: row.role, orgPath: row.org_path, displayName: row.display_name };
    },
    async create(user) {
      const token = randomBytes(32).toString('base64url');
      const csrfToken = randomBytes(18).toString('base64url');
      const now = clock.now();
      const expiresAt = now + ttlMs;
      await db.query(
        `insert into sessions (token_hash, username, csrf_token, created_at, last_seen, expires_at)
         values ($1, $2, $3, to_timestamp($4 / 1000.0), to_timestamp($4 / 1000.0), to_timestamp($5 / 1000.0))`,
        [sha256(token), user.username, csrfToken, now, expiresAt],
      );
      if (now - lastSweep > 600_000) {
        lastSweep = now;
        await db.query('delete from sessions where expires_at < to_timestamp($1 / 1000.0)', [now]).catch(() => {});
      }
      return { token, csrfToken, expiresAt };
    },
    async lookup(token) {
      if (!token || token.length > 100) return null;
      const r = await db.query<{ username: string; role: Role; org_path: string; display_name: string; csrf_token: string; expires_ms: number; disabled: boolean }>(
        `select u.username, u.role, u.org_path, u.display_name, u.disabled, s.csrf_token,
                (extract(epoch from s.expires_at) * 1000)::float8 as expires_ms
           from sessions s join users u on u.username = s.username
          where s.token_hash = $1`,
        [sha256(token)],
      );
      const row = r.rows[0];
      if (!row || row.disabled || Number(row.expires_ms) <= clock.now()) return null;
      return {
        user: { username: row.username, role: row.role, orgPath: row.org_path, displayName: row.display_name },
        csrfToken: row.csrf_token,
        expiresAt: Number(row.expires_ms),
      };
    },
    async destroy(token) {
      await db.query('delete from sessions where token_hash = $1', [sha256(token)]);
    },
  };
}

export interface LoginLimitOptions {
  /** failed attempts per (user, address) before the delay starts; per address it is 4×, per user 10× */
  maxFailures?: number;
  /** how long a failure counts, and the longest delay */
  windowMs?: number;
  /** the first delay once a limit is reached; it doubles with each further failure */
  baseDelayMs?: number;
}

/** A login attempt already counted as a failure; `succeeded()` takes it back. */
export interface LoginAttempt {
  succeeded(): void;
}

/**
 * Login throttle. Each attempt is counted as a failure BEFORE the password hash is checked, in one
 * synchronous step, so concurrent guesses cannot all slip past the check; a success takes its
 * count back. Keys: (user, address), address, and user. Past a key's limit the next attempt must
 * wait a delay that doubles with every further failure (capped at the window). The user-wide key
 * has a high limit and never delays an address the user has logged in from before, so a stranger
 * cannot lock a known user out of their own machine.
 */
export function createLoginLimiter(clock: Clock, opts: LoginLimitOptions = {}) {
  const max = opts.maxFailures ?? 5;
  const windowMs = opts.windowMs ?? 5 * 60_000;
  const baseDelayMs = opts.baseDelayMs ?? Math.max(1000, Math.round(windowMs / 16));
  const failures = new Map<string, number[]>();
  const known = new Set<string>(); // (user, address) pairs that logged in successfully
  const recent = (key: string) => {
    const now = clock.now();
    const list = (failures.get(key) ?? []).filter((t) => now - t < windowMs);
    if (list.length) failures.set(key, list);
    else failures.delete(key);
    return list;
  };
  const delay = (list: number[], limit: number) => {
    if (list.length < limit) return 0;
    const wait = Math.min(windowMs, baseDelayMs * 2 ** (list.length - limit));
    return Math.max(0, list[list.length - 1]! + wait - clock.now());
  };
  const keysOf = (username: string, remote: string) => {
    const pair = `p:${username}\u0000${remote}`;
    const keys: [string, number][] = [[pair, max], [`a:${remote}`, max * 4]];
    if (!known.has(pair)) keys.push([`u:${username}`, max * 10]);
    return keys;
  };
  return {
    /** ms to wait before an attempt of this user from this address is allowed (0: now) */
    retryAfter(username: string, remote: string): number {
      return Math.max(...keysOf(username, remote).map(([k, limit]) => delay(recent(k), limit)));
    },
    /**
     * Count an attempt now (before the hash is checked), or say how long to wait. Synchronous:
     * two concurrent attempts can never both see the count before the other.
     */
    begin(username: string, remote: string): { wait: number } | LoginAttempt {
      const wait = this.retryAfter(username, remote);
      if (wait > 0) return { wait };
      const now = clock.now();
      const keys = keysOf(username, remote).map(([k]) => k);
      for (const k of keys) failures.set(k, [...recent(k), now]);
      if (failures.size > 100_000) failures.clear(); // bound memory under a flood
      return {
        succeeded: () => {
          const pair = keys[0]!;
          failures.delete(pair);
          if (known.size > 100_000) known.clear();
          known.add(pair);
          for (const k of keys.slice(1)) {
            const list = failures.get(k);
            const i = list?.lastIndexOf(now) ?? -1;
            if (list && i >= 0) list.splice(i, 1);
          }
        },
      };
    },
  };
}
export type LoginLimiter = ReturnType<typeof createLoginLimiter>;
