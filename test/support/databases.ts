// The store's tests run on three engines: PGlite in memory; PostgreSQL with native partitions
// (`postgres`: the database sets xiaoan.timescale = off, see docs/configuration.md); and
// PostgreSQL with TimescaleDB (`timescale`: hypertable, compression and retention policies,
// continuous aggregates with real-time aggregation). Both server engines use the server at
// XIAOAN_TEST_PG (default 127.0.0.1:5432, trust auth); each run creates its own database and drops
// it after. The `timescale` engine needs TimescaleDB preloaded on that server and says what to
// run when it is not.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openDb, migrate, redactUrl, type Db } from '../../ingest/db.ts';

export const PG_ADMIN_URL = process.env.XIAOAN_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  url: string;
  db: Db;
  /** closes the handle and drops the database */
  drop(): Promise<void>;
}

export const ENGINES = ['pglite', 'postgres', 'timescale'] as const;
export type Engine = (typeof ENGINES)[number];

/** A fresh, migrated database on the given engine. */
export async function createTestDatabase(engine: Engine, opts: { migrate?: boolean } = {}): Promise<TestDatabase> {
  let url = 'pglite:memory';
  let cleanup = async () => {};
  if (engine !== 'pglite') {
    const name = `xiaoan_test_${randomBytes(5).toString('hex')}`;
    await withAdmin(async (admin) => {
      if (engine === 'timescale') await requireTimescale(admin);
      await admin.query(`create database ${name}`);
      // Native partitions even where TimescaleDB is loaded (the setting migration 002 honours).
      if (engine === 'postgres') await admin.query(`alter database ${name} set xiaoan.timescale = off`);
    });
    url = PG_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`);
    cleanup = () => withAdmin((a) => a.query(`drop database if exists ${name} with (force)`).then(() => {}));
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

async function withAdmin<T>(fn: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}

/** Fails, saying what to run, unless the server can give a new database TimescaleDB. */
async function requireTimescale(admin: pg.Client): Promise<void> {
  const r = await admin.query<{ preload: string; available: boolean }>(
    `select current_setting('shared_preload_libraries') as preload,
            exists (select 1 from pg_available_extensions where name = 'timescaledb') as available`,
  );
  const { preload, available } = r.rows[0]!;
  if (available && /(^|,)\s*"?timescaledb"?\s*(,|$)/.test(preload)) return;
  throw new Error(
    `the 'timescale' test engine needs TimescaleDB preloaded on ${redactUrl(PG_ADMIN_URL)} ` +
      `(extension ${available ? 'installed' : 'not installed'}, shared_preload_libraries = '${preload}'). ` +
      `Run \`bash ../shared/timescaledb/install.sh\` as root for the system cluster (what .ci/run does), ` +
      `or point XIAOAN_TEST_PG at a server started with -c shared_preload_libraries=timescaledb ` +
      `(see ../shared/timescaledb/README.md). 测试引擎 timescale 需要预加载 TimescaleDB。`,
  );
}
