// Every audit row carries an org path, so some auditor can read it (GET /api/audit filters by scope).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, ENGINES, type TestDatabase } from '../test/support/databases.ts';
import { writeAudit } from './audit.ts';
import { scopeSql } from './scope.ts';

const SCHOOL = '37/3701/370102/370102001';

describe.each(ENGINES)('audit rows on %s', (engine) => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase(engine);
    for (const [path, parent, level, code] of [
      ['37', null, 'province', '37'], ['37/3701', '37', 'city', '3701'], ['37/3701/370102', '37/3701', 'county', '370102'], [SCHOOL, '37/3701/370102', 'school', '370102001'],
    ] as const) {
      await t.db.query('insert into org_nodes (path, parent, level, code, name_zh) values ($1, $2, $3, $4, $5)', [path, parent, level, code, code]);
    }
    await t.db.query(`insert into users (username, password_hash, role, org_path) values ('desk-a', 'x', 'desk', $1)`, [SCHOOL]);
  }, 60_000);
  afterAll(async () => t?.drop());

  /** What an auditor scoped to `orgPath` gets for `action` (the same predicate as GET /api/audit). */
  async function seenBy(orgPath: string, action: string): Promise<string[]> {
    const params: unknown[] = [];
    const where = scopeSql({ orgPath } as never, 'org_path', params);
    params.push(action);
    const r = await t.db.query<{ org_path: string }>(`select org_path from audit_log where ${where} and action = $${params.length} order by id`, params);
    return r.rows.map((x) => x.org_path);
  }

  it("a failed login names the tried account's school, so its admins see it", async () => {
    await writeAudit(t.db, { action: 'login.failed', target: 'desk-a', orgPath: null, username: 'desk-a', role: null, remote: '203.0.113.9' });
    expect(await seenBy(SCHOOL, 'login.failed')).toEqual([SCHOOL]);
  });

  it('a failed login to an unknown name goes to the province root, seen only province-wide', async () => {
    await writeAudit(t.db, { action: 'login.unknown', target: 'nobody', orgPath: null, username: 'nobody', role: null, remote: '203.0.113.9' });
    expect(await seenBy('37/3701', 'login.unknown')).toEqual([]);
    expect(await seenBy('37', 'login.unknown')).toEqual(['37']);
  });

  it("a view with no node of its own (a snapshot) falls back to the actor's scope", async () => {
    await writeAudit(t.db, { action: 'camera.snapshot', target: 'alert-1/3', orgPath: null, actorOrgPath: SCHOOL, username: 'desk-a', role: 'desk', remote: '10.0.0.5' });
    expect(await seenBy(SCHOOL, 'camera.snapshot')).toEqual([SCHOOL]);
  });

  it('the path of what was touched wins over the actor', async () => {
    await writeAudit(t.db, { action: 'gateway.add', target: 'gw-1', orgPath: '37/3701/370102', actorOrgPath: '37', username: 'cli:root', role: 'operator', remote: 'cli' });
    expect(await seenBy('37/3701/370102', 'gateway.add')).toEqual(['37/3701/370102']);
  });

  it('no row is left without an org path', async () => {
    await writeAudit(t.db, { action: 'deadletters.replay', target: '1,2', orgPath: null, username: 'cli:root', role: 'operator', remote: 'cli' });
    const r = await t.db.query<{ n: number }>('select count(*)::int as n from audit_log where org_path is null');
    expect(r.rows[0]!.n).toBe(0);
  });
});
