// The Grafana dashboards: well-formed, pointing at the provisioned data sources, and every SQL
// query (panels and variables) runs against the migrated schema on PGlite and PostgreSQL, with
// Grafana's macros expanded the way its PostgreSQL data source does.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createTestDatabase, ENGINES, type TestDatabase } from '../test/support/databases.ts';

const DIR = fileURLToPath(new URL('./grafana/', import.meta.url));

async function dashboards() {
  const files = (await readdir(DIR)).filter((f) => f.endsWith('.json'));
  return Promise.all(files.map(async (f) => ({ file: f, json: JSON.parse(await readFile(join(DIR, f), 'utf8')) })));
}

/** Grafana's PostgreSQL macros and our variables, expanded to plain SQL. */
export function expandMacros(sql: string): string {
  const interval = (s: string) => ({ '1h': '1 hour', '1m': '1 minute', '$__interval': '1 minute' })[s.trim()] ?? s.trim();
  return sql
    .replace(/\$__timeGroupAlias\(([^,]+),\s*([^)]+)\)/g, (_m, col, iv) => `date_bin('${interval(iv)}', ${col}, timestamptz '2000-01-01 00:00:00+00') as time`)
    .replace(/\$__timeFilter\(([^)]+)\)/g, (_m, col) => `${col} between to_timestamp(0) and now()`)
    .replace(/\$region/g, '37')
    .replace(/\$device/g, 'smoke-1')
    .replace(/\$metric/g, 'smoke_density');
}

interface Query {
  where: string;
  sql: string;
}

function queries(d: any): { pg: Query[]; influx: Query[] } {
  const pg: Query[] = [];
  const influx: Query[] = [];
  for (const p of d.panels) {
    for (const t of p.targets) {
      const uid = t.datasource?.uid ?? p.datasource?.uid;
      if (uid === 'xiaoan-timescaledb') pg.push({ where: `panel "${p.title}"`, sql: t.rawSql });
      else influx.push({ where: `panel "${p.title}"`, sql: t.query });
    }
  }
  for (const v of d.templating.list) {
    if (v.datasource?.uid === 'xiaoan-timescaledb') pg.push({ where: `variable ${v.name}`, sql: v.query });
    else if (v.datasource?.uid === 'xiaoan-influxdb') influx.push({ where: `variable ${v.name}`, sql: v.query });
  }
  return { pg, influx };
}

describe('Grafana dashboards', () => {
  it('are well-formed, unique, in Asia/Shanghai, and use only provisioned data sources', async () => {
    const ds = new Set<string>();
    for (const f of [join(DIR, 'provisioning/datasources/xiaoan.yaml'), fileURLToPath(new URL('../docker/grafana/provisioning/datasources/xiaoan.yaml', import.meta.url))]) {
      const y = parse(await readFile(f, 'utf8').catch(() => 'datasources: []'));
      for (const d of y.datasources ?? []) ds.add(d.uid);
    }
    expect(ds).toEqual(new Set(['xiaoan-timescaledb', 'xiaoan-influxdb']));
    const all = await dashboards();
    expect(all.length).toBeGreaterThanOrEqual(3);
    expect(new Set(all.map((d) => d.json.uid)).size).toBe(all.length);
    for (const { file, json } of all) {
      expect(json.timezone, file).toBe('Asia/Shanghai');
      expect(json.title, file).toMatch(/[\u4e00-\u9fff]/); // Chinese first
      const ids = json.panels.map((p: any) => p.id);
      expect(new Set(ids).size, file).toBe(ids.length);
      for (const p of json.panels) {
        expect(ds.has(p.datasource.uid), `${file} ${p.title}`).toBe(true);
        expect(p.targets.length, `${file} ${p.title}`).toBeGreaterThan(0);
      }
    }
  });

  it('query InfluxDB only by the measurements and tags the InfluxDB sink writes', async () => {
    const tags = new Set(['gateway', 'device', 'metric', 'org', 'type', 'priority', 'drill']);
    for (const { json } of await dashboards()) {
      for (const q of queries(json).influx) {
        for (const m of q.sql.matchAll(/FROM "([a-z_]+)"/g)) expect(['readings', 'events'], q.where).toContain(m[1]);
        for (const m of q.sql.matchAll(/(?:WHERE|AND|GROUP BY[^"]*,|KEY =)\s*"([a-z_]+)"/g)) expect(tags.has(m[1]!) || m[1] === 'value' || m[1] === 'seq', `${q.where}: ${m[1]}`).toBe(true);
      }
    }
  });
});

describe.each(ENGINES)('Grafana SQL on %s', (engine) => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase(engine);
  }, 180_000);
  afterAll(async () => {
    await t?.drop();
  }, 180_000);

  it('runs every panel and variable query against the migrated schema', async () => {
    const failures: string[] = [];
    let n = 0;
    for (const { file, json } of await dashboards()) {
      for (const q of queries(json).pg) {
        n++;
        const sql = expandMacros(q.sql);
        if (/\$\w/.test(sql)) failures.push(`${file} ${q.where}: unexpanded variable in ${sql}`);
        await t.db.query(sql).catch((e) => failures.push(`${file} ${q.where}: ${(e as Error).message}`));
      }
    }
    expect(failures).toEqual([]);
    expect(n).toBeGreaterThan(10);
  });
});
