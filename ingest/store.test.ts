import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Reading } from '../contract/index.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../test/support/databases.ts';
import { openStore, type Store } from './store.ts';
import { scopeOf } from './scope.ts';
import { recordKey } from './postgres/writer.ts';

const SCHOOL_A = '37/3701/370102/3737000001';
const SCHOOL_B = '37/3701/370103/3737000002';
const NOW = Date.now();

const reading = (seq: number, over: Partial<Reading> = {}): Reading => ({
  seq, device: 'temp-1', metric: 'temperature', ts: NOW - 60_000 + seq, value: 20 + seq / 100, quality: 'good', ...over,
});

describe.each(ENGINES)('store on %s', (engine) => {
  let t: TestDatabase;
  let store: Store;
  beforeAll(async () => {
    t = await createTestDatabase(engine);
    store = await openStore(t.db);
    await store.seedOrgTree({ demo: true });
    await store.registerGateway({ id: 'gw-a', county: '370102', orgPath: SCHOOL_A, password: 'secret-a-123' });
    await store.registerGateway({ id: 'gw-b', county: '370103', orgPath: SCHOOL_B, password: 'secret-b-123' });
  });
  afterAll(async () => {
    await store?.close();
    await t?.drop();
  });

  it('seeds Shandong and its 16 cities, and the demo schools', async () => {
    const r = await t.db.query<{ level: string; n: number }>('select level, count(*)::int as n from org_nodes group by level order by level');
    expect(Object.fromEntries(r.rows.map((x) => [x.level, x.n]))).toEqual({ province: 1, city: 16, county: 2, school: 2 });
    const again = await store.seedOrgTree({ demo: true });
    expect(again).toBe(21);
  });

  it('rejects a bad org node and a gateway outside its county, naming the field', async () => {
    await expect(store.upsertOrgNode({ path: '37/3701/37010', nameZh: 'x' })).rejects.toMatchObject({ field: 'path' });
    await expect(
      store.registerGateway({ id: 'gw-x', county: '370102', orgPath: SCHOOL_B, password: 'long-enough' }),
    ).rejects.toThrow(/does not lie in county 370102/);
    await expect(store.registerGateway({ id: 'gw+x', county: '370102', orgPath: SCHOOL_A, password: 'long-enough' })).rejects.toMatchObject({ field: 'id' });
  });

  it('verifies gateway passwords', async () => {
    expect((await store.verifyGateway('gw-a', 'secret-a-123'))?.orgPath).toBe(SCHOOL_A);
    expect(await store.verifyGateway('gw-a', 'wrong')).toBeNull();
    expect(await store.verifyGateway('nobody', 'secret-a-123')).toBeNull();
    const h = await t.db.query<{ secret_hash: string }>("select secret_hash from gateways where id = 'gw-a'");
    expect(h.rows[0]!.secret_hash).toMatch(/^scrypt\$/);
    expect(h.rows[0]!.secret_hash).not.toContain('secret-a-123');
  });

  it('learns devices from a birth, marks them offline on the last will, ignores a stale status', async () => {
    const birth = {
      v: 1 as const, gateway: 'gw-a', state: 'online' as const, ts: NOW - 5000,
      devices: [
        { id: 'smoke-1', profile: 'smoke-photoelectric-generic', state: 'online' as const, lastSeen: NOW - 6000, expectedIntervalMs: 300_000 },
        { id: 'temp-1', profile: 'temp-humidity-generic', state: 'online' as const, lastSeen: null },
      ],
    };
    expect(await store.applyGatewayStatus(birth)).toEqual({ orgPath: SCHOOL_A, county: '370102' });
    let devs = await store.queries.listDevices(scopeOf(SCHOOL_A));
    expect(devs.map((d) => [d.deviceId, d.state, d.expectedIntervalMs])).toEqual([
      ['smoke-1', 'online', 300_000],
      ['temp-1', 'online', null],
    ]);
    expect(await store.applyGatewayStatus({ ...birth, ts: NOW - 10_000 })).toBeNull(); // older than applied
    expect(await store.applyGatewayStatus({ v: 1, gateway: 'gw-a', state: 'offline', ts: NOW - 4000 })).not.toBeNull();
    devs = await store.queries.listDevices(scopeOf(SCHOOL_A));
    expect(devs.every((d) => d.state === 'offline' && d.gatewayState === 'offline')).toBe(true);
    expect(await store.applyGatewayStatus({ ...birth, ts: NOW - 3000 })).not.toBeNull();
    expect(await store.applyGatewayStatus({ v: 1, gateway: 'nobody', state: 'online', ts: NOW })).toBeNull();
    await store.applyGatewayStatus({
      v: 1, gateway: 'gw-b', state: 'online', ts: NOW,
      devices: [{ id: 'temp-1', profile: 'temp-humidity-generic', state: 'online', lastSeen: null }],
    });
  });

  it('forgets a device the gateway no longer lists in its birth (removed there), and only on that gateway', async () => {
    await store.applyGatewayStatus({
      v: 1, gateway: 'gw-a', state: 'online', ts: NOW - 1000,
      devices: [{ id: 'smoke-1', profile: 'smoke-photoelectric-generic', state: 'online', lastSeen: NOW - 1500 }],
    });
    expect((await store.queries.listDevices(scopeOf(SCHOOL_A))).map((d) => d.deviceId)).toEqual(['smoke-1']);
    // the other gateway's temp-1 is untouched
    expect((await store.queries.listDevices(scopeOf('37'))).filter((d) => d.gatewayId === 'gw-b').map((d) => d.deviceId)).toEqual(['temp-1']);
  });

  it('stores each reading once per (gateway, seq) and says which were new', async () => {
    const first = await store.sink.writeReadings([{ gatewayId: 'gw-a', readings: [reading(1), reading(2), reading(3)] }]);
    expect([...first].sort()).toEqual([recordKey('gw-a', 1), recordKey('gw-a', 2), recordKey('gw-a', 3)].sort());
    // redelivery of 2 and 3 with a new 4, plus the other gateway's seq 1
    const second = await store.sink.writeReadings([
      { gatewayId: 'gw-a', readings: [reading(2), reading(3), reading(4)] },
      { gatewayId: 'gw-b', readings: [reading(1, { value: 99 })] },
    ]);
    expect([...second].sort()).toEqual([recordKey('gw-a', 4), recordKey('gw-b', 1)].sort());
    // PostgreSQL: the first write went by direct COPY, the redelivery through the staging table
    if (engine !== 'pglite') expect(store.sink.stats().fallbacks).toBe(1);
    const n = await t.db.query<{ n: number }>('select count(*)::int as n from readings');
    expect(n.rows[0]!.n).toBe(5);
  });

  it('stores events once and keeps their data', async () => {
    const ev = { seq: 10, device: 'smoke-1', type: 'smoke.alarm', ts: NOW - 1000, priority: 'alarm' as const, drill: true, data: { density: 0.2, note: 'tab\there "q" \\ back' } };
    const a = await store.sink.writeEvents([{ gatewayId: 'gw-a', events: [ev] }]);
    const b = await store.sink.writeEvents([{ gatewayId: 'gw-a', events: [ev] }]);
    expect(a.size).toBe(1);
    expect(b.size).toBe(0);
    const rows = await store.queries.events(scopeOf(SCHOOL_A), { type: 'smoke.alarm' });
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ drill: true, priority: 'alarm', data: ev.data });
    expect(await store.queries.events(scopeOf(SCHOOL_B))).toEqual([]);
  });

  it.skipIf(engine === 'timescale')('keeps readings of a far-off clock in the default partition and today in a daily partition (native partitions; a hypertable makes its own chunks)', async () => {
    expect(store.timescale).toBe(false);
    await store.sink.writeReadings([{ gatewayId: 'gw-a', readings: [reading(50, { ts: Date.UTC(2001, 0, 1) })] }]);
    const r = await t.db.query<{ part: string; n: number }>(
      'select tableoid::regclass::text as part, count(*)::int as n from readings group by 1 order by 1',
    );
    const parts = Object.fromEntries(r.rows.map((x) => [x.part, x.n]));
    expect(parts['readings_default']).toBe(1);
    expect(Object.keys(parts).some((p) => /^readings_p\d{8}$/.test(p))).toBe(true);
  });

  it('answers scoped queries: devices, latest, raw and rollup ranges, counts, gateways', async () => {
    const a = scopeOf(SCHOOL_A);
    const b = scopeOf(SCHOOL_B);
    const city = scopeOf('37/3701');
    expect((await store.queries.listDevices(b)).map((d) => d.gatewayId)).toEqual(['gw-b']);
    expect((await store.queries.listDevices(city)).length).toBe(3);
    expect(await store.queries.listDevices(scopeOf('37/3702'))).toEqual([]);

    const latest = await store.queries.latest(a, { device: 'temp-1' });
    expect(latest).toHaveLength(1);
    expect(latest[0]).toMatchObject({ gatewayId: 'gw-a', metric: 'temperature', value: 20.04 });

    const raw = await store.queries.readings(a, { device: 'temp-1', metric: 'temperature', from: NOW - 3_600_000, to: NOW });
    expect(raw.resolution).toBe('raw');
    expect(raw.points.map((p) => p.value)).toEqual([20.01, 20.02, 20.03, 20.04]);
    await store.sink.refreshRollups({ all: true });
    const week = await store.queries.readings(a, { device: 'temp-1', metric: 'temperature', from: NOW - 3 * 86_400_000, to: NOW + 60_000 });
    expect(week.resolution).toBe('1m');
    const total = week.points.reduce((n, p) => n + p.count, 0);
    expect(total).toBe(4);
    expect(Math.min(...week.points.map((p) => p.min))).toBeCloseTo(20.01);
    const year = await store.queries.readings(a, { device: 'temp-1', metric: 'temperature', from: NOW - 300 * 86_400_000, to: NOW + 60_000 });
    expect(year.resolution).toBe('1h');
    expect(year.points.reduce((n, p) => n + p.count, 0)).toBe(4);
    // the other school's temp-1 is not in A's scope
    expect((await store.queries.readings(b, { device: 'temp-1', metric: 'temperature', from: NOW - 3_600_000, to: NOW })).points.map((p) => p.value)).toEqual([99]);
    await expect(store.queries.readings(a, { device: 'temp-1', metric: 'temperature', from: NOW, to: NOW - 1 })).rejects.toThrow(/before/);

    const counts = await store.queries.countsByRegion(city);
    expect(counts.map((c) => [c.orgPath, c.gateways, c.devices])).toEqual([
      ['37/3701/370102', 1, 2],
      ['37/3701/370103', 1, 1],
    ]);
    expect(counts[0]!.nameZh).toBe('历下区');
    const cats = await store.queries.countsByCategory(a);
    expect(cats).toContainEqual({ kind: 'event_type', key: 'smoke.alarm', count: 1 });
    expect((await store.queries.listGateways(b)).map((g) => g.id)).toEqual(['gw-b']);
  });

  it('records dead letters visible only in their scope', async () => {
    await store.recordDeadLetter({ topic: 'xiaoan/v1/37/3701/370102/gw-a/readings', gatewayId: 'gw-a', orgPath: SCHOOL_A, reason: 'schema', detail: 'readings[0].ts: too small', payload: Buffer.from('{"v":1}\u0000') });
    await store.recordDeadLetter({ topic: 'garbage', reason: 'topic', detail: 'bad topic', payload: 'x' });
    expect((await store.queries.deadLetters(scopeOf(SCHOOL_A))).map((d) => d.reason)).toEqual(['schema']);
    expect(await store.queries.deadLetters(scopeOf(SCHOOL_B))).toEqual([]);
    expect((await store.queries.deadLetters(scopeOf('37'))).map((d) => d.reason)).toEqual(['topic', 'schema']);
  });

  it.skipIf(engine === 'timescale')('drops expired partitions (native partitions; on TimescaleDB its retention policy does it)', async () => {
    const { dropped } = await store.maintain();
    expect(dropped).toEqual([]); // nothing older than 90 days has a partition
  });

  it.runIf(engine === 'timescale')('on TimescaleDB: a hypertable with compression and retention policies and real-time continuous aggregates', async () => {
    expect(store.timescale).toBe(true);
    const jobs = await t.db.query<{ proc_name: string; hypertable_name: string }>(
      'select proc_name, hypertable_name from timescaledb_information.jobs where hypertable_name is not null order by 1, 2',
    );
    expect(jobs.rows.map((j) => j.proc_name)).toEqual(
      expect.arrayContaining(['policy_compression', 'policy_retention', 'policy_refresh_continuous_aggregate']),
    );
    const caggs = await t.db.query<{ view_name: string; materialized_only: boolean }>(
      'select view_name, materialized_only from timescaledb_information.continuous_aggregates order by 1',
    );
    expect(caggs.rows).toEqual([
      { view_name: 'readings_1h', materialized_only: false },
      { view_name: 'readings_1m', materialized_only: false },
    ]);
  });
});
