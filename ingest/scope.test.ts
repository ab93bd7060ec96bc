import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scopeOf, scopeSql } from './scope.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../test/support/databases.ts';

describe.each(ENGINES)('scope predicate on %s', (engine) => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase(engine, { migrate: false });
    await t.db.exec(`create table scoped_probe (org_path text not null);
      insert into scoped_probe values ('37'), ('37/3701'), ('37/3701/370102'), ('37/3701/370102/3737000001'),
        ('37/3701/370103'), ('37/3702/370202/3737000009'), ('37/37011'), ('37/4137010422/4137010422-03');`);
  });
  afterAll(async () => { await t?.drop(); });

  const within = async (scope: string) => {
    const params: unknown[] = [];
    const where = scopeSql(scopeOf(scope), 'org_path', params);
    const r = await t.db.query<{ org_path: string }>(`select org_path from scoped_probe where ${where} order by 1`, params);
    return r.rows.map((x) => x.org_path);
  };

  it('returns the node and its subtree only', async () => {
    expect(await within('37/3701')).toEqual(['37/3701', '37/3701/370102', '37/3701/370102/3737000001', '37/3701/370103']);
    expect(await within('37/3701/370102/3737000001')).toEqual(['37/3701/370102/3737000001']);
    expect(await within('37/4137010422')).toEqual(['37/4137010422/4137010422-03']);
    expect((await within('37')).length).toBe(8);
  });
  it('refuses a malformed scope', () => {
    expect(() => scopeOf("37/3701' or 1=1 --")).toThrow(/city|county|path/);
  });
});
