// `xiaoan rules backtest` and `rules check` on a real store: history written to PGlite on disk,
// replayed through the smoke rule with a threshold sweep.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb, migrate } from '../ingest/index.ts';
import { rulesBacktest, rulesCheck, parseTime } from '../cli/commands/rules.ts';
import type { CommandIo } from '../cli/command.ts';

const SCHOOL = '37/3701/370102/3737000001';
const T0 = Date.parse('2026-11-20T02:00:00Z');

function capture(): CommandIo & { lines: string[]; errs: string[] } {
  const lines: string[] = [];
  const errs: string[] = [];
  return { lines, errs, out: (l) => lines.push(l), err: (l) => errs.push(l), env: {} };
}

describe('xiaoan rules backtest / check', () => {
  let dir: string;
  let url: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xiaoan-bt-'));
    url = `pglite:${join(dir, 'pg')}`;
    const db = await openDb(url);
    await migrate(db);
    await db.query(`insert into gateways (id, org_path, county, secret_hash) values ('gw-1', $1, '370102', 'x')`, [SCHOOL]);
    await db.query(`insert into devices (gateway_id, device_id, org_path, profile) values ('gw-1', 'smoke-1', $1, 'smoke-photoelectric-generic')`, [SCHOOL]);
    // three smoke episodes of 20 s: peaks 0.13, 0.19 and 0.27, an hour apart
    const rows: string[] = [];
    let seq = 0;
    [0.13, 0.19, 0.27].forEach((peak, e) => {
      for (let s = 0; s < 90; s++) {
        const v = s >= 10 && s < 30 ? peak : 0.02;
        rows.push(`('gw-1', ${++seq}, 'smoke-1', 'smoke_density', to_timestamp(${(T0 + e * 3_600_000 + s * 1000) / 1000}), ${v}, 'good')`);
      }
    });
    await db.exec(`insert into readings (gateway_id, seq, device_id, metric, ts, value, quality) values ${rows.join(',')}`);
    await db.close();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prints the alerts per threshold value of the sweep', async () => {
    const io = capture();
    const code = await rulesBacktest.run(['smoke-sustained', '--from', '2026-11-20', '--to', '2026-11-21', '--sweep', 'threshold=0.10..0.30:0.05', '--database', url, '--summary'], io);
    expect(code).toBe(0);
    const counts = io.lines.filter((l) => l.startsWith('smoke-sustained')).map((l) => /threshold=([\d.]+)\s+alerts\s+(\d+)/.exec(l)!.slice(1).map(Number));
    expect(counts).toEqual([[0.1, 3], [0.15, 2], [0.2, 1], [0.25, 1], [0.3, 0]]);
    const json = capture();
    await rulesBacktest.run(['smoke-sustained', '--from', String(T0 - 1000), '--to', String(T0 + 86_400_000), '--database', url, '--json', '--scope', '37/3701/370103'], json);
    expect(JSON.parse(json.lines[0]!).alerts).toEqual([]); // another county sees none of it
  });

  it('refuses bad input with a clear message', async () => {
    await expect(rulesBacktest.run(['smoke-sustained', '--from', 'yesterday', '--to', '-0m', '--database', url], capture())).rejects.toThrow(/not understood/);
    await expect(rulesBacktest.run(['nope', '--from', '-1d', '--to', '-0m', '--database', url], capture())).rejects.toThrow(/no rule "nope"/);
    await expect(rulesBacktest.run(['smoke-sustained', '--from', '-1d', '--to', '-0m', '--sweep', 'limit=1..2:1', '--database', url], capture())).rejects.toThrow(/no parameter "limit"/);
    expect(parseTime('2026-11-28')).toBe(Date.parse('2026-11-27T16:00:00Z'));
  });

  it('rules check reports every error at once and exits 1', async () => {
    await writeFile(join(dir, 'bad.yaml'), 'id: Bad Id\nname: { zh: 坏 }\ncategory: hazard\nseverity: minor\nwhen: { metric: x, above: 1 }\n');
    const io = capture();
    expect(await rulesCheck.run([join(dir, 'bad.yaml')], io)).toBe(1);
    expect(io.lines.filter((l) => l.startsWith('error')).length).toBe(2);
    const ok = capture();
    expect(await rulesCheck.run([], ok)).toBe(0);
  });
});
