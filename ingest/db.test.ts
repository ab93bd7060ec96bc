import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from './db.ts';
import { openStore } from './store.ts';
import { recordKey } from './postgres/writer.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../test/support/databases.ts';

const MIGRATIONS = fileURLToPath(new URL('./postgres/migrations/', import.meta.url));

describe.each(ENGINES)('database handle on %s', (engine) => {
  let t: TestDatabase;
  beforeAll(async () => { t = await createTestDatabase(engine); });
  afterAll(async () => { await t?.drop(); });

  it('applies migrations once and is safe to apply twice', async () => {
    const again = await migrate(t.db);
    expect(again).toEqual([]);
    const r = await t.db.query<{ n: number }>('select count(*)::int as n from schema_migrations');
    expect(r.rows[0]!.n).toBeGreaterThan(0);
  });

  it('rolls a failed transaction back', async () => {
    await t.db.exec('create table tx_probe (x int primary key)');
    await expect(t.db.transaction(async (tx) => {
      await tx.query('insert into tx_probe values (1)');
      await tx.query('insert into tx_probe values (1)');
    })).rejects.toThrow();
    const r = await t.db.query<{ n: number }>('select count(*)::int as n from tx_probe');
    expect(r.rows[0]!.n).toBe(0);
  });

  it('delivers NOTIFY to listeners', async () => {
    const got: string[] = [];
    const stop = await t.db.listen('probe_channel', (p) => got.push(p));
    await t.db.query("select pg_notify('probe_channel', 'hello')");
    for (let i = 0; i < 50 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await stop();
    expect(got).toEqual(['hello']);
  });
});

describe.each(ENGINES)('upgrade to exactly once on (gateway, seq) on %s', (engine) => {
  let t: TestDatabase;
  let oldDir: string;
  beforeAll(async () => {
    t = await createTestDatabase(engine, { migrate: false });
    // the schema as it was before 070: the dedup key was the unique index (gateway_id, seq, ts)
    oldDir = await mkdtemp(join(tmpdir(), 'xiaoan-migrations-'));
    for (const f of await readdir(MIGRATIONS)) if (/^0[0-6]\d_.*\.sql$/.test(f)) await copyFile(join(MIGRATIONS, f), join(oldDir, f));
    await migrate(t.db, oldDir);
  });
  afterAll(async () => {
    await t?.drop();
    if (oldDir) await rm(oldDir, { recursive: true, force: true });
  });

  it('moves the stored keys into record_seqs once, drops the old index, and keeps stored seqs duplicates', async () => {
    const now = Date.now() - 600_000;
    await t.db.exec(`insert into org_nodes (path, parent, level, code, name_zh) values ('37', null, 'province', '37', '山东省')`);
    await t.db.exec(`insert into gateways (id, org_path, county, secret_hash) values ('gw-up', '37', '370102', 'x')`);
    // seq 1 twice (a replay with another ts got in under the old key), seq 2 once, an event at seq 3
    await t.db.query(
      `insert into readings (gateway_id, seq, device_id, metric, ts, value)
       select 'gw-up', s, 'temp-1', 'temperature', to_timestamp(t / 1000.0), 20
         from unnest($1::bigint[], $2::float8[]) as u(s, t)`,
      [[1, 1, 2], [now, now + 5000, now + 1000]],
    );
    await t.db.exec(`insert into events (gateway_id, seq, device_id, type, ts, priority) values ('gw-up', 3, 'smoke-1', 'smoke.alarm', now(), 'alarm')`);
    const idx = () => t.db.query("select 1 from pg_indexes where indexname = 'readings_dedup'").then((r) => r.rowCount);
    expect(await idx()).toBe(1);

    expect(await migrate(t.db)).toContain('070_record_seqs');
    const keys = await t.db.query<{ gateway_id: string; seq: number }>('select gateway_id, seq from record_seqs order by seq');
    expect(keys.rows.map((r) => [r.gateway_id, Number(r.seq)])).toEqual([['gw-up', 1], ['gw-up', 2]]);
    expect(await idx()).toBe(0);

    const store = await openStore(t.db);
    const got = await store.sink.writeReadings([{ gatewayId: 'gw-up', readings: [1, 2, 4].map((seq) => ({ seq, device: 'temp-1', metric: 'temperature', ts: now + 9000, value: 21, quality: 'good' as const })) }]);
    expect([...got]).toEqual([recordKey('gw-up', 4)]);
    expect((await store.sink.writeEvents([{ gatewayId: 'gw-up', events: [{ seq: 3, device: 'smoke-1', type: 'smoke.alarm', ts: now, priority: 'alarm', drill: false, data: {} }] }])).size).toBe(0);
    // the first floor the upgraded gateway sends lets the migrated keys go
    await store.sink.writeReadings([{ gatewayId: 'gw-up', floor: 4, readings: [{ seq: 5, device: 'temp-1', metric: 'temperature', ts: now + 9500, value: 21, quality: 'good' }] }]);
    await store.maintain();
    const left = await t.db.query<{ seq: number }>("select seq from record_seqs where gateway_id = 'gw-up' order by seq");
    expect(left.rows.map((r) => Number(r.seq))).toEqual([4, 5]);
    await store.close();
  });
});
