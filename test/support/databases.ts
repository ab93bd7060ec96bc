// The store's tests run on both engines: PGlite in memory, and the PostgreSQL server at
// 127.0.0.1:5432 (trust auth). Each PostgreSQL run creates its own database and drops it after.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openDb, migrate, type Db } from '../../ingest/db.ts';

export const PG_ADMIN_URL = process.env.XIAOAN_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  url: string;
  db: Db;
  /** closes the handle and drops the database */
  drop(): Promise<void>;
}

export const ENGINES = ['pglite', 'postgres'] as const;
export type Engine = (typeof ENGINES)[number];

/** A fresh, migrated database on the given engine. */
export async function createTestDatabase(engine: Engine, opts: { migrate?: boolean } = {}): Promise<TestDatabase> {
  let url: string;
  let cleanup = async () => {};
  if (engine === 'pglite') {
    url = 'pglite:memory';
  } else {
    const name = `xiaoan_test_${randomBytes(5).toString('hex')}`;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    url = PG_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`);
    cleanup = async () => {
      const a = new pg.Client({ connectionString: PG_ADMIN_URL });
      await a.connect();
      await a.query(`drop database if exists ${name} with (force)`);
      await a.end();
    };
  }
  const db = await openDb(url);
  if (opts.migrate !== false) await migrate(db);
  return {
    url,
    db,
    async drop() {
      await db.close().catch(() => {});
      await cleanup();
    },
  };
}
