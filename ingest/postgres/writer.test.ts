// Exactly once on (gateway, seq) (docs/delivery.md): the writer stores a record iff its seq is at
// or above the gateway's floor and was not stored before, whatever its timestamp, on every engine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock, type DeviceEvent, type Reading } from '../../contract/index.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../../test/support/databases.ts';
import { openStore, type Store } from '../store.ts';
import { recordKey } from './writer.ts';

const SCHOOL_A = '37/3701/370102/3737000001';
const NOW = Date.now();

const reading = (seq: number, over: Partial<Reading> = {}): Reading => ({
  seq, device: 'temp-1', metric: 'temperature', ts: NOW - 600_000 + seq * 1000, value: seq, quality: 'good', ...over,
});
const event = (seq: number, over: Partial<DeviceEvent> = {}): DeviceEvent => ({
  seq, device: 'smoke-1', type: 'smoke.alarm', ts: NOW - 600_000 + seq * 1000, priority: 'alarm', drill: false, data: {}, ...over,
});
const keys = (g: string, ...seqs: number[]) => seqs.map((s) => recordKey(g, s)).sort();

describe.each(ENGINES)('exactly once on (gateway, seq) on %s', (engine) => {
  let t: TestDatabase;
  let store: Store;
  let gw = 0;
  // the writer prunes after a write at most every 5 s of this clock
  let clockMs = NOW;
  const clock = { ...systemClock, now: () => clockMs };
  // each test gets its own gateway, so floors and keys of one test never meet another's
  const newGateway = async () => {
    const id = `gw-dedup-${++gw}`;
    await store.registerGateway({ id, county: '370102', orgPath: SCHOOL_A, password: 'secret-123-abc' });
    return id;
  };
  const count = async (table: 'readings' | 'events', g: string, seq?: number) =>
    (await t.db.query<{ n: number }>(`select count(*)::int as n from ${table} where gateway_id = $1 and ($2::bigint is null or seq = $2)`, [g, seq ?? null])).rows[0]!.n;
  const storedSeqs = async (g: string) =>
    (await t.db.query<{ seq: number }>('select seq from record_seqs where gateway_id = $1 order by seq', [g])).rows.map((r) => Number(r.seq));

  beforeAll(async () => {
    t = await createTestDatabase(engine);
    store = await openStore(t.db, { clock });
    await store.seedOrgTree({ demo: true });
  });
  afterAll(async () => {
    await store?.close();
    await t?.drop();
  });

  it('stores a reading replayed with the same seq but another timestamp once', async () => {
    const g = await newGateway();
    expect([...await store.sink.writeReadings([{ gatewayId: g, readings: [reading(1), reading(2)] }])].sort()).toEqual(keys(g, 1, 2));
    // the gateway's clock was corrected between the two sends: same records, other ts (and an hour away)
    const again = await store.sink.writeReadings([{ gatewayId: g, readings: [reading(1, { ts: NOW - 1000 }), reading(2, { ts: NOW - 3_600_000 })] }]);
    expect([...again]).toEqual([]);
    expect(await count('readings', g)).toBe(2);
    // PostgreSQL: the replay met its keys on the direct COPY and went the staging way
    if (engine !== 'pglite') expect(store.sink.stats().fallbacks).toBe(1);
    // nor does the replay move the latest value or the device's last-seen time to its ts
    const latest = await t.db.query<{ ms: number }>(
      `select (extract(epoch from ts) * 1000)::float8 as ms from latest_readings where gateway_id = $1`, [g]);
    expect(latest.rows.map((r) => Math.round(Number(r.ms)))).toEqual([reading(2).ts]);
  });

  it('stores an event replayed with another timestamp once', async () => {
    const g = await newGateway();
    expect((await store.sink.writeEvents([{ gatewayId: g, events: [event(7)] }])).size).toBe(1);
    expect((await store.sink.writeEvents([{ gatewayId: g, events: [event(7, { ts: NOW - 5 })] }])).size).toBe(0);
    expect(await count('events', g, 7)).toBe(1);
  });

  it('treats a record below the gateway floor as a duplicate, readings and events alike', async () => {
    const g = await newGateway();
    await store.sink.writeReadings([{ gatewayId: g, floor: 100, readings: [reading(100), reading(101)] }]);
    // seq 50 was receipted long ago (or never sent): below the floor it is not stored, though new to the table
    const late = await store.sink.writeReadings([{ gatewayId: g, floor: 60, readings: [reading(50), reading(102)] }]);
    expect([...late]).toEqual(keys(g, 102));
    expect(await count('readings', g, 50)).toBe(0);
    const ev = await store.sink.writeEvents([{ gatewayId: g, events: [event(99), event(103)] }]);
    expect([...ev]).toEqual(keys(g, 103));
    // the batch's own floor counts too, even before it is stored
    const own = await store.sink.writeEvents([{ gatewayId: g, floor: 200, events: [event(150), event(200)] }]);
    expect([...own]).toEqual(keys(g, 200));
  });

  it('tells exactly which records were new: stored before, below the floor, twice in one write, other gateway', async () => {
    const g = await newGateway();
    const h = await newGateway();
    await store.sink.writeReadings([{ gatewayId: g, floor: 10, readings: [reading(10), reading(11)] }]);
    const got = await store.sink.writeReadings([
      { gatewayId: g, floor: 11, readings: [reading(9), reading(11), reading(12), reading(13)] },
      { gatewayId: g, floor: 11, readings: [reading(13, { ts: NOW - 7 }), reading(14)] },
      { gatewayId: h, readings: [reading(10), reading(11)] },
    ]);
    expect([...got].sort()).toEqual([...keys(g, 12, 13, 14), ...keys(h, 10, 11)].sort());
    expect(await count('readings', g)).toBe(5); // 10, 11, 12, 13, 14
    expect(await count('readings', g, 13)).toBe(1);
    expect(await count('readings', h)).toBe(2);
  });

  it('forgets stored seqs below the floor as it advances, and only those', async () => {
    const g = await newGateway();
    const old = await newGateway(); // an older gateway: no floor, never pruned
    await store.sink.writeReadings([
      { gatewayId: g, floor: 1, readings: [1, 2, 3, 4, 5].map((s) => reading(s)) },
      { gatewayId: old, readings: [1, 2, 3].map((s) => reading(s)) },
    ]);
    await store.sink.pruneSeqs();
    expect(await storedSeqs(g)).toEqual([1, 2, 3, 4, 5]);
    // 1–3 receipted: the next batch says the gateway's oldest unreceipted seq is 4
    await store.sink.writeReadings([{ gatewayId: g, floor: 4, readings: [reading(6)] }]);
    const r = await store.sink.pruneSeqs();
    expect(r).toEqual({ deleted: 3, more: false });
    expect(await storedSeqs(g)).toEqual([4, 5, 6]);
    expect(await storedSeqs(old)).toEqual([1, 2, 3]);
    // forgotten keys stay duplicates through the floor; kept keys through record_seqs
    expect([...await store.sink.writeReadings([{ gatewayId: g, floor: 4, readings: [reading(2), reading(5), reading(7)] }])]).toEqual(keys(g, 7));
    // a lower floor (an old batch redelivered) never lowers it
    await store.sink.writeReadings([{ gatewayId: g, floor: 2, readings: [reading(3)] }]);
    expect((await t.db.query<{ floor: number }>('select floor from gateway_floor where gateway_id = $1', [g])).rows[0]!.floor).toBe(4);
    // the rows themselves stay: pruning touches keys only
    expect(await count('readings', g)).toBe(7);
  });

  it('prunes after a write when 5 s have passed since the last prune', async () => {
    const g = await newGateway();
    await store.sink.writeReadings([{ gatewayId: g, floor: 0, readings: [0, 1, 2].map((s) => reading(s)) }]);
    clockMs += 5_000;
    await store.sink.writeReadings([{ gatewayId: g, floor: 2, readings: [reading(3)] }]); // prunes 0, 1
    expect(await storedSeqs(g)).toEqual([2, 3]);
    clockMs += 1_000;
    await store.sink.writeReadings([{ gatewayId: g, floor: 3, readings: [reading(4)] }]); // too soon
    expect(await storedSeqs(g)).toEqual([2, 3, 4]);
    clockMs += 4_000;
    await store.sink.writeReadings([{ gatewayId: g, floor: 4, readings: [reading(5)] }]);
    expect(await storedSeqs(g)).toEqual([4, 5]);
  });

  it('prunes in bounded steps, as store.maintain() and the writer run it', async () => {
    const g = await newGateway();
    await store.sink.writeReadings([{ gatewayId: g, floor: 0, readings: Array.from({ length: 30 }, (_, i) => reading(i)) }]);
    await store.sink.writeReadings([{ gatewayId: g, floor: 25, readings: [reading(30)] }]); // within 5 s: no prune
    expect(await store.sink.pruneSeqs({ budget: 10 })).toEqual({ deleted: 10, more: true });
    expect((await storedSeqs(g))[0]).toBe(10);
    const m = await store.maintain();
    expect(m.pruned).toBe(15);
    expect(await storedSeqs(g)).toEqual([25, 26, 27, 28, 29, 30]);
  });
});
