import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from './db.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../test/support/databases.ts';

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
