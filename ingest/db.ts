// One database handle over two engines: PostgreSQL (pg Pool) in production, PGlite (Postgres in
// WASM, a directory or memory) as the embedded default. Same SQL, same migrations.
//
// DATABASE_URL forms:
//   postgres://user@host:5432/db     PostgreSQL (TimescaleDB used when the extension is present)
//   pglite:./data/pg                 PGlite in a directory
//   pglite:memory                    PGlite in memory (tests)

import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';

export interface QueryResult<R> {
  rows: R[];
  rowCount: number;
}

/** What runs SQL: the database itself, or one transaction on it. */
export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
  /** Several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
}

export interface Db extends Queryable {
  readonly engine: 'postgres' | 'pglite';
  /** Runs `fn` in one transaction; commits when it resolves, rolls back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** LISTEN on a channel; the returned function stops listening. */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
  /** The raw pg Pool, for COPY streams; undefined on PGlite. */
  readonly pool?: pg.Pool;
  close(): Promise<void>;
}

// int8 (bigint) and numeric come back as strings by default in pg; our ids and counts fit in
// a double, and timestamps are read as epoch ms through explicit casts in the queries.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

export async function openDb(url: string): Promise<Db> {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return openPostgres(url);
  if (url.startsWith('pglite:')) {
    const where = url.slice('pglite:'.length);
    return openPglite(where === 'memory' || where === '' ? undefined : where);
  }
  throw new Error(`database URL "${redactUrl(url)}" is neither postgres://… nor pglite:DIR|pglite:memory`);
}

/** Never print a password. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}

async function openPostgres(url: string): Promise<Db> {
  const pool = new pg.Pool({ connectionString: url, max: 10, idleTimeoutMillis: 10_000 });
  // An idle client that loses its server (restart) emits 'error' on the pool; without a
  // listener that would crash the process. The next query gets a fresh connection.
  pool.on('error', () => {});
  await pool.query('select 1');
  const listeners = new Map<string, { client: pg.PoolClient; fns: Set<(p: string) => void> }>();
  const db: Db = {
    engine: 'postgres',
    pool,
    async query(sql, params) {
      const r = await pool.query(sql, params as unknown[]);
      return { rows: r.rows, rowCount: r.rowCount ?? 0 };
    },
    async transaction(fn) {
      const client = await pool.connect();
      // A checked-out client whose server goes away emits 'error' as well as failing its query;
      // without a listener that would crash the process (the pool only guards idle clients).
      let broken = false;
      const onError = () => { broken = true; };
      client.on('error', onError);
      try {
        await client.query('begin');
        const tx: Queryable = {
          async query(sql, params) {
            const r = await client.query(sql, params as unknown[]);
            return { rows: r.rows, rowCount: r.rowCount ?? 0 };
          },
          async exec(sql) {
            await client.query(sql);
          },
        };
        const out = await fn(tx);
        await client.query('commit');
        return out;
      } catch (e) {
        await client.query('rollback').catch(() => { broken = true; });
        throw e;
      } finally {
        client.off('error', onError);
        client.release(broken ? true : undefined);
      }
    },
    async exec(sql) {
      await pool.query(sql);
    },
    async listen(channel, onPayload) {
      let entry = listeners.get(channel);
      if (!entry) {
        const client = await pool.connect();
        client.on('error', () => {});
        entry = { client, fns: new Set() };
        const fns = entry.fns;
        client.on('notification', (n) => {
          if (n.channel === channel) for (const f of fns) f(n.payload ?? '');
        });
        await client.query(`listen ${pg.escapeIdentifier(channel)}`);
        listeners.set(channel, entry);
      }
      entry.fns.add(onPayload);
      const e = entry;
      return async () => {
        e.fns.delete(onPayload);
        if (e.fns.size === 0 && listeners.get(channel) === e) {
          listeners.delete(channel);
          await e.client.query(`unlisten ${pg.escapeIdentifier(channel)}`).catch(() => {});
          e.client.release();
        }
      };
    },
    async close() {
      for (const e of listeners.values()) e.client.release();
      listeners.clear();
      await pool.end();
    },
  };
  return db;
}

async function openPglite(dir: string | undefined): Promise<Db> {
  if (dir) await mkdir(dir, { recursive: true });
  const lite = dir ? await PGlite.create(dir) : await PGlite.create();
  const db: Db = {
    engine: 'pglite',
    async query(sql, params) {
      const r = await lite.query(sql, params as unknown[]);
      return { rows: r.rows as never[], rowCount: r.rows.length > 0 ? r.rows.length : (r.affectedRows ?? 0) };
    },
    async transaction(fn) {
      return lite.transaction(async (t) =>
        fn({
          async query(sql, params) {
            const r = await t.query(sql, params as unknown[]);
            return { rows: r.rows as never[], rowCount: r.rows.length > 0 ? r.rows.length : (r.affectedRows ?? 0) };
          },
          async exec(sql) {
            await t.exec(sql);
          },
        }),
      );
    },
    async exec(sql) {
      await lite.exec(sql);
    },
    async listen(channel, onPayload) {
      const stop = await lite.listen(channel, onPayload);
      return async () => stop();
    },
    async close() {
      await lite.close();
    },
  };
  return db;
}

const MIGRATIONS_DIR = join(fileURLToPath(new URL('.', import.meta.url)), 'postgres', 'migrations');

/**
 * Apply the versioned plain-SQL migrations (ingest/postgres/migrations/NNN_name.sql) that are not
 * applied yet, each in its own transaction, in file-name order. Safe to run twice and from
 * several processes at once (an advisory lock serialises them on PostgreSQL).
 */
export async function migrate(db: Db, dir = MIGRATIONS_DIR): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort();
  await db.exec(`create table if not exists schema_migrations (
    version text primary key,
    applied_at timestamptz not null default now()
  )`);
  const applied: string[] = [];
  for (const file of files) {
    const version = file.replace(/\.sql$/, '');
    const sql = await readFile(join(dir, file), 'utf8');
    const done = await db.transaction(async (tx) => {
      if (db.engine === 'postgres') await tx.query('select pg_advisory_xact_lock(7340101)');
      const seen = await tx.query('select 1 from schema_migrations where version = $1', [version]);
      if (seen.rowCount > 0) return false;
      try {
        await tx.exec(sql);
      } catch (e) {
        throw new Error(`migration ${file} failed: ${(e as Error).message}`);
      }
      await tx.query('insert into schema_migrations (version) values ($1)', [version]);
      return true;
    });
    if (done) applied.push(version);
  }
  return applied;
}

/** Whether the TimescaleDB extension can be used on this database. */
export async function hasTimescale(db: Queryable): Promise<boolean> {
  const r = await db.query<{ n: number }>(
    "select count(*)::int as n from pg_available_extensions where name = 'timescaledb'",
  );
  return (r.rows[0]?.n ?? 0) > 0;
}
