// Rule change control: versions kept, audit with who/when/diff, hot reload from the API and from files.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, ENGINES, type TestDatabase } from '../../test/support/databases.ts';
import { createAlerting, createRulebook, RuleChangeError } from './index.ts';
import type { RuleSet } from '../../rules/index.ts';

const RULE = (threshold: number) => `id: lab-temp
name: { zh: 实验室温度, en: Lab temperature }
category: hazard
severity: minor
when: { metric: temperature, above: "\${limit}", for: 1m }
params: { limit: ${threshold} }
`;

async function until(fn: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.each(ENGINES)('rulebook on %s', (engine) => {
  let tdb: TestDatabase;
  let dir: string;
  beforeAll(async () => {
    tdb = await createTestDatabase(engine);
    dir = await mkdtemp(join(tmpdir(), 'xiaoan-rules-'));
  });
  afterAll(async () => {
    await tdb?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps every version, audits who/when/diff, hot-reloads', async () => {
    await writeFile(join(dir, 'school.yaml'), RULE(35));
    const sets: RuleSet[] = [];
    const book = await createRulebook({ db: tdb.db, dirs: [dir], onChange: (s) => sets.push(s) });
    const limitOf = () => book.current().rules.find((r) => r.id === 'lab-temp')?.params.limit;
    expect(book.current().rules.map((r) => r.id)).toEqual(expect.arrayContaining(['smoke-sustained', 'device-silent', 'lab-temp']));
    expect(limitOf()).toBe(35);

    // an invalid change is refused with every error and changes nothing
    const bad = await book.save({ text: 'id: lab-temp\nname: { zh: x }\ncategory: nope\nseverity: minor\nwhen: {}\n', author: 'author' }).catch((e) => e);
    expect(bad).toBeInstanceOf(RuleChangeError);
    expect((bad as RuleChangeError).errors.length).toBeGreaterThanOrEqual(2);
    await expect(book.save({ text: RULE(40), author: '' })).rejects.toThrow(/author/);

    const v = await book.save({ text: RULE(40), author: 'author', comment: 'summer' });
    expect(v.version).toBe(2);
    expect(v.diff).toContain('- params: { limit: 35 }');
    expect(v.diff).toContain('+ params: { limit: 40 }');
    expect(limitOf()).toBe(40);
    await expect(book.save({ text: RULE(40), author: 'author' })).rejects.toMatchObject({ code: 'conflict' });

    await book.setEnabled('lab-temp', false, 'author', 'noisy');
    expect(book.current().rules.find((r) => r.id === 'lab-temp')!.enabled).toBe(false);
    await book.remove('lab-temp', 'admin');
    expect(limitOf()).toBeUndefined();
    const versions = await book.versions('lab-temp');
    expect(versions.map((x) => [x.version, x.action, x.author])).toEqual([
      [1, 'create', 'file:school.yaml'],
      [2, 'update', 'author'],
      [3, 'disable', 'author'],
      [4, 'delete', 'admin'],
    ]);
    expect(versions.every((x) => x.createdAt > 0)).toBe(true);

    // a second process sees API changes (pg_notify) and file edits hot-reload
    const other = await createRulebook({ db: tdb.db, dirs: [dir], watch: true });
    await book.save({ text: RULE(45).replace('lab-temp', 'store-temp'), author: 'author' });
    await until(() => other.current().rules.some((r) => r.id === 'store-temp'));
    await writeFile(join(dir, 'more.yaml'), RULE(50).replace('lab-temp', 'file-temp'));
    await until(() => other.current().rules.some((r) => r.id === 'file-temp' && r.params.limit === 50));
    expect((await other.audit({ limit: 3 }))[0]!.ruleId).toBe('file-temp');
    await other.close();
    await book.close();
    expect(sets.length).toBeGreaterThan(3);
  });

  it('an alerting with a rulebook hot-reloads versions written by anyone (the rule_versions trigger)', async () => {
    const alerting = await createAlerting({ db: tdb.db, rules: [], tickMs: 0, rulebook: { dirs: [dir], watch: false } });
    expect(alerting.rules().some((r) => r.id === 'smoke-sustained')).toBe(true);
    // another process (the rules page) writes a version straight into rule_versions
    await tdb.db.query(
      `insert into rule_versions (rule_id, version, hash, source, action, author, comment, diff, created_at)
       values ('page-temp', 1, 'h', $1, 'create', 'author', 'from the page', '', now())`,
      [RULE(33).replace('lab-temp', 'page-temp')],
    );
    await until(() => alerting.rules().some((r) => r.id === 'page-temp' && r.params.limit === 33));
    await alerting.rulebook!.setEnabled('page-temp', false, 'author');
    expect(alerting.rules().find((r) => r.id === 'page-temp')!.enabled).toBe(false);
    await alerting.stop();
  });
});
