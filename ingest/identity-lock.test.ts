// One worker per client id: a second worker under a taken id is refused before it connects, on
// real PostgreSQL (a session-level advisory lock, seen across separate connections pools as two
// processes would hold them) and on PGlite (within the process). The claim ends with the worker,
// and with its connection when the process dies.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../test/support/databases.ts';
import { openDb, type Db } from './db.ts';
import { claimWorkerIdentity, WorkerIdentityTakenError } from './identity-lock.ts';
import { openStore, type Store } from './store.ts';
import { startCentralBroker, type CentralBroker } from './broker.ts';
import { createIngestWorker } from './worker.ts';

describe('worker identity on PostgreSQL', () => {
  let t: TestDatabase;
  let other: Db;
  let store: Store;
  let broker: CentralBroker;
  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    other = await openDb(t.url); // a second process's pool
    store = await openStore(t.db);
    broker = await startCentralBroker({ port: 0, store, serviceAccounts: [{ username: 'ingest', password: 'ingest-password' }] });
  });
  afterAll(async () => {
    await broker?.close();
    await store?.close();
    await other?.close();
    await t?.drop();
  });

  it('refuses a second claim of one id from another connection pool; the release and a dead session free it', async () => {
    const a = await claimWorkerIdentity(t.db, 'xiaoan-ingest-3701-main');
    await expect(claimWorkerIdentity(other, 'xiaoan-ingest-3701-main')).rejects.toBeInstanceOf(WorkerIdentityTakenError);
    const b = await claimWorkerIdentity(other, 'xiaoan-ingest-3701-b'); // another name is free
    await a.release();
    const a2 = await claimWorkerIdentity(other, 'xiaoan-ingest-3701-main');
    await a2.release();
    await b.release();
    // a worker that dies: PostgreSQL ends its session, and the lock with it
    const dying = await claimWorkerIdentity(t.db, 'xiaoan-ingest-3701-crash');
    await t.db.query(`select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and classid = 7340102 and pid <> pg_backend_pid() and database = (select oid from pg_database where datname = current_database())`);
    let claimed = null;
    for (let i = 0; i < 50 && !claimed; i++) {
      claimed = await claimWorkerIdentity(other, 'xiaoan-ingest-3701-crash').catch(() => null);
      if (!claimed) await new Promise((r) => setTimeout(r, 50));
    }
    expect(claimed).not.toBeNull();
    await claimed!.release();
    await dying.release();
  });

  it('claims its id again after the database ended its session (a restart)', async () => {
    const held = await claimWorkerIdentity(t.db, 'xiaoan-ingest-3701-restart');
    await t.db.query(`select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and classid = 7340102 and pid <> pg_backend_pid() and database = (select oid from pg_database where datname = current_database())`);
    // within a few seconds it holds it again: another claim is refused
    let refused = false;
    for (let i = 0; i < 60 && !refused; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const n = await other.query<{ n: number }>(`select count(*)::int as n from pg_locks where locktype = 'advisory' and classid = 7340102 and granted and database = (select oid from pg_database where datname = current_database())`);
      refused = n.rows[0]!.n === 1 && (await claimWorkerIdentity(other, 'xiaoan-ingest-3701-restart').then((c) => c.release().then(() => false), () => true));
    }
    expect(refused).toBe(true);
    await held.release();
    await (await claimWorkerIdentity(other, 'xiaoan-ingest-3701-restart')).release();
  });

  it('a second worker of the same region and replica is refused with a message naming the id; another replica starts', async () => {
    const opts = { brokerUrl: broker.url, username: 'ingest', password: 'ingest-password', region: '3701', listeners: [] };
    const first = await createIngestWorker({ ...opts, store });
    await first.start();
    const otherStore = await openStore(other);
    try {
      const second = await createIngestWorker({ ...opts, store: otherStore });
      const err = await second.start().then(() => null, (e: Error) => e);
      expect(err).toBeInstanceOf(WorkerIdentityTakenError);
      expect(err!.message).toMatch(/already runs as "xiaoan-ingest-3701-main".*replica/);
      expect(second.stats().lanes.readings.state).toBe('closed'); // it never connected
      const b = await createIngestWorker({ ...opts, store: otherStore, replica: 'b' });
      await b.start();
      expect(b.stats().lanes.readings.state).toBe('connected');
      await b.stop();
      // once the first stops, its name is free again
      await first.stop();
      await second.start();
      expect(second.stats().lanes.control.state).toBe('connected');
      await second.stop();
    } finally {
      await first.stop();
      await otherStore.close();
    }
  });
});

describe('worker identity on PGlite', () => {
  it('refuses a second claim of one id in the process until it is released', async () => {
    // only the handle matters (a PGlite Db has no pool): no need to boot one
    const lite = { engine: 'pglite' } as Db;
    const a = await claimWorkerIdentity(lite, 'id-1');
    await expect(claimWorkerIdentity(lite, 'id-1')).rejects.toThrow(/already runs as "id-1"/);
    const b = await claimWorkerIdentity(lite, 'id-2');
    await (await claimWorkerIdentity({ engine: 'pglite' } as Db, 'id-1')).release(); // another database
    await a.release();
    await (await claimWorkerIdentity(lite, 'id-1')).release();
    await b.release();
  });
});
