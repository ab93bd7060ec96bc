// The alerting tier on both engines: raise, worsen, acknowledge, resolve, clear, escalate,
// scope, drills, pg_notify, linkage, state across restarts, and delivery exactly once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { parse } from 'yaml';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock, Command, CommandResult, Reading, DeviceEvent } from '../../contract/index.ts';
import { compileRules } from '../../rules/index.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../../test/support/databases.ts';
import { scopeOf } from '../scope.ts';
import type { StoredBatch } from '../types.ts';
import { createAlerting, loadLibrary, startReferenceReceiver, nextTier, ALERT_CHANNEL, type Alerting } from './index.ts';

const SCHOOL = '37/3701/370102/3737000001';
const OTHER = '37/3701/370103/3737000002';
const GW = 'gw-3737000001';
const T0 = Date.parse('2026-11-28T02:00:00Z');

function fakeClock(start = T0): Clock & { set(t: number): void; advance(ms: number): void } {
  let t = start;
  return {
    now: () => t,
    set: (v) => void (t = v),
    advance: (ms) => void (t += ms),
    setTimeout: () => 0,
    clearTimeout: () => {},
    setInterval: () => 0,
    clearInterval: () => {},
  };
}

async function seed(tdb: TestDatabase, now: number) {
  const db = tdb.db;
  await db.query(`insert into gateways (id, org_path, county, name, secret_hash, state) values ($1, $2, '370102', 'demo', 'x', 'online'), ('gw-3737000002', $3, '370103', 'other', 'x', 'online')`, [GW, SCHOOL, OTHER]);
  // capabilities as the birth message carries them (from the profiles): linkage reads these, not names
  const caps: Record<string, object> = {
    'gate-controller-generic': { 'evacuation-release': [{ point: 'release', value: 'fire-alarm' }], alarms: { 'gate.forced_open': 'intrusion' } },
    'onvif-camera-generic': { snapshot: true },
    'smoke-photoelectric-generic': { alarms: { 'smoke.alarm': 'fire' } },
  };
  const dev = (id: string, profile: string, building: string | null, room: string | null, interval: number | null) =>
    db.query(
      `insert into devices (gateway_id, device_id, org_path, profile, name, building, room, state, last_seen, expected_interval_ms, capabilities)
       values ($1, $2, $3, $4, $2, $5, $6, 'online', to_timestamp($7::float8 / 1000), $8, $9::jsonb)`,
      [GW, id, SCHOOL, profile, building, room, now, interval, JSON.stringify(caps[profile] ?? {})],
    );
  // only temp-1 reports often enough to fall silent within the test
  await dev('smoke-1', 'smoke-photoelectric-generic', 'A', '101', 3_600_000);
  await dev('temp-1', 'temp-humidity-generic', 'A', '102', 10_000);
  await dev('gate-1', 'gate-controller-generic', 'A', null, 3_600_000);
  await dev('gate-2', 'gate-controller-generic', 'B', null, 3_600_000);
  await dev('cam-1', 'onvif-camera-generic', 'A', '101', 3_600_000);
}

let seq = 0;
const readings = (device: string, metric: string, from: number, values: number[], stepMs = 1000): StoredBatch => ({
  gateway: { id: GW, orgPath: SCHOOL, county: '370102' },
  readings: values.map((value, i): Reading => ({ seq: ++seq, device, metric, ts: from + i * stepMs, value, quality: 'good' })),
  events: [],
});
const event = (device: string, type: string, ts: number, drill = false): StoredBatch => ({
  gateway: { id: GW, orgPath: SCHOOL, county: '370102' },
  readings: [],
  events: [{ seq: ++seq, device, type, ts, priority: 'alarm', drill, data: {} } as DeviceEvent],
});

describe.each(ENGINES)('alerting on %s', (engine) => {
  let tdb: TestDatabase;
  let dir: string;
  const desk = scopeOf(SCHOOL);
  const other = scopeOf(OTHER);
  const city = scopeOf('37/3701');

  beforeAll(async () => {
    tdb = await createTestDatabase(engine);
    dir = await mkdtemp(join(tmpdir(), 'xiaoan-recv-'));
  });
  afterAll(async () => {
    await tdb?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('smoke, gate-forced and offline rules raise, escalate, clear and reach the receiver exactly once, across restarts', async () => {
    const clock = fakeClock();
    await seed(tdb, clock.now());
    const lib = await loadLibrary();
    expect(lib.errors).toEqual([]);
    let receiver = await startReferenceReceiver({ secret: 's3cret', dir, now: clock.now });
    const port = receiver.port;
    const commands: Command[] = [];
    const sender = { async send(_gw: string, c: Command): Promise<CommandResult> { commands.push(c); return { v: 1, id: c.id, ok: true, ts: clock.now() }; } };
    const make = () =>
      createAlerting({
        db: tdb.db,
        rules: lib,
        clock,
        tickMs: 0,
        commands: sender,
        delivery: { hazardUrl: receiver.hazardUrl, emergencyUrl: receiver.emergencyUrl, secret: 's3cret', backoffMs: 1000 },
        linkage: { snapshot: async () => ({ mime: 'image/jpeg', data: Buffer.from([0xff, 0xd8, 0xff, 0xd9]) }) },
      });
    const notes: string[] = [];
    const unlisten = await tdb.db.listen(ALERT_CHANNEL, (p) => notes.push(p));
    let alerting: Alerting = await make();

    // --- smoke: 0.20 for 11 s → raised (critical), 0.35 → fatal
    await alerting.listener.onStored(readings('smoke-1', 'smoke_density', clock.now(), [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]));
    let open = await alerting.list(desk, { state: 'open' });
    expect(open.map((a) => [a.ruleId, a.severity, a.drill])).toEqual([['smoke-sustained', 'critical', false]]);
    await alerting.listener.onStored(readings('smoke-1', 'smoke_density', clock.now() + 12_000, [0.35]));
    open = await alerting.list(desk, { state: 'open' });
    expect(open).toHaveLength(1);
    expect(open[0]!.severity).toBe('fatal');
    const smokeId = open[0]!.id;

    // scope: another school sees nothing, the city sees it
    expect(await alerting.list(other, {})).toEqual([]);
    expect(await alerting.get(other, smokeId)).toBeNull();
    await expect(alerting.acknowledge(other, smokeId, 'intruder', 'x')).rejects.toMatchObject({ code: 'not_found' });
    expect((await alerting.list(city, { state: 'open' })).map((a) => a.id)).toEqual([smokeId]);

    // --- gate forced open (an event) and the temperature sensor silent
    await alerting.listener.onStored(event('gate-1', 'gate.forced_open', clock.now()));
    clock.advance(31_000); // temp-1 expects data every 10 s; silent for 3 × 10 s
    await alerting.tick();
    open = await alerting.list(desk, { state: 'open' });
    expect(open.map((a) => a.ruleId).sort()).toEqual(['device-silent', 'gate-forced', 'smoke-sustained']);
    const silent = open.filter((a) => a.ruleId === 'device-silent');
    expect(silent.map((a) => a.deviceId)).toEqual(['temp-1']);
    expect(open.some((a) => a.ruleId === 'gate-forced' && a.deviceId === 'gate-1' && a.category === 'emergency')).toBe(true);

    // linkage ran for the smoke emergency: gates of building A released (never B), snapshot attached
    await new Promise((r) => setTimeout(r, 300));
    const released = commands.filter((c) => c.kind === 'device.write');
    expect(released.map((c) => c.kind === 'device.write' && [c.device, c.point])).toEqual([['gate-1', 'release']]);
    const actions = await alerting.actions(desk, smokeId);
    expect(actions.filter((a) => a.ok).map((a) => a.action).sort()).toEqual(['release-gates', 'snapshot']);
    const att = await alerting.attachments(desk, smokeId);
    expect(att[0]!.mime).toBe('image/jpeg');
    expect(att[0]!.data.length).toBe(4);

    // --- restart the alerting (worker): state restored, high readings do not raise again
    await alerting.stop();
    alerting = await make();
    await alerting.listener.onStored(readings('smoke-1', 'smoke_density', clock.now(), [0.3, 0.3]));
    expect((await alerting.list(desk, { ruleId: 'smoke-sustained' })).length).toBe(1);

    // --- escalation: smoke (2 min) and gate (2 min) unacknowledged go to the county, then the city
    clock.advance(121_000);
    await alerting.listener.onStored(readings('temp-1', 'temperature', clock.now(), [21])); // temp reports again → clears
    await alerting.tick();
    let smoke = (await alerting.get(desk, smokeId))!;
    expect(smoke.escalatedTo).toBe('37/3701/370102');
    clock.advance(121_000);
    await alerting.tick();
    smoke = (await alerting.get(desk, smokeId))!;
    expect(smoke.escalatedTo).toBe('37/3701');
    clock.advance(121_000);
    await alerting.tick();
    expect((await alerting.get(desk, smokeId))!.escalationLevel).toBe(2); // no further than the city

    // --- the receiver restarts while deliveries are pending
    await receiver.close();
    await alerting.listener.onStored(readings('smoke-1', 'smoke_density', clock.now(), new Array(62).fill(0.05)));
    expect((await alerting.get(desk, smokeId))!.state).toBe('cleared');
    await alerting.deliver(); // fails: receiver down → retried later
    receiver = await startReferenceReceiver({ secret: 's3cret', dir, now: clock.now, port });
    clock.advance(10 * 60_000); // gate quiet for 5 min → cleared; retries due
    await alerting.listener.onStored(readings('temp-1', 'temperature', clock.now(), [21]));
    await alerting.tick();
    await alerting.tick();
    expect((await alerting.list(desk, { state: 'open' })).map((a) => a.ruleId)).toEqual([]);

    // --- restart the worker once more and deliver again: nothing twice
    await alerting.stop();
    alerting = await make();
    await alerting.tick();
    const got = receiver.received();
    const keys = got.map((d) => d.idempotencyKey);
    expect(new Set(keys).size).toBe(keys.length);
    const of = (rule: string) => got.filter((d) => d.payload.alert.ruleId === rule).map((d) => d.payload.transition);
    expect(of('smoke-sustained')).toEqual(['raised', 'worsened', 'escalated', 'escalated', 'cleared']);
    expect(of('gate-forced')).toEqual(['raised', 'escalated', 'escalated', 'cleared']);
    expect(of('device-silent')).toEqual(['raised', 'cleared', 'raised', 'cleared']); // silent again while the escalations ran
    expect(got.filter((d) => d.payload.alert.ruleId === 'smoke-sustained').every((d) => d.module === 'emergency')).toBe(true);
    expect(got.filter((d) => d.payload.alert.ruleId === 'device-silent').every((d) => d.module === 'hazard')).toBe(true);
    const pending = await tdb.db.query<{ n: number }>(`select count(*)::int as n from alert_outbox where delivered_at is null`);
    expect(pending.rows[0]!.n).toBe(0);

    // history has who and when for every step
    const h = await alerting.history(desk, smokeId);
    expect(h.map((x) => x.action)).toEqual(expect.arrayContaining(['raised', 'worsened', 'escalated', 'cleared', 'action']));
    expect(h.every((x) => typeof x.at === 'number' && x.actor.length > 0)).toBe(true);

    // every change was announced
    await new Promise((r) => setTimeout(r, 100));
    const parsed = notes.map((n) => JSON.parse(n));
    expect(parsed.some((n) => n.id === smokeId && n.state === 'cleared' && n.category === 'emergency' && n.orgPath === SCHOOL && n.drill === false)).toBe(true);

    await unlisten();
    await alerting.stop();
    await receiver.close();
  });

  it('acknowledge with a comment, resolve, drills end to end, retries and dead letters', async () => {
    const clock = fakeClock(T0 + 86_400_000);
    const lib = await loadLibrary();
    const receiver = await startReferenceReceiver({ secret: 'k', now: clock.now });
    const alerting = await createAlerting({
      db: tdb.db,
      rules: lib,
      clock,
      tickMs: 0,
      delivery: { hazardUrl: receiver.hazardUrl, emergencyUrl: receiver.emergencyUrl, secret: 'k', maxAttempts: 3, backoffMs: 1000 },
      deliverOnChange: false,
    });
    // a drill at the school staging gate-2: its alerts are drills, end to end; the rest of the site stays real
    await expect(alerting.startDrill(other, SCHOOL, 10, 'desk', ['gate-2'])).rejects.toMatchObject({ code: 'forbidden' });
    await expect(alerting.startDrill(desk, SCHOOL, 10, 'desk', ['no-such-device'])).rejects.toMatchObject({ code: 'invalid' });
    const drill = await alerting.startDrill(desk, SCHOOL, 10, 'desk', ['gate-2']);
    expect(drill.devices).toEqual([`${GW}/gate-2`]);
    await alerting.listener.onStored(event('gate-2', 'gate.forced_open', clock.now()));
    await alerting.listener.onStored(event('gate-1', 'gate.forced_open', clock.now()));
    const open = await alerting.list(desk, { state: 'open', ruleId: 'gate-forced' });
    const a = open.find((x) => x.deviceId === 'gate-2');
    expect(a!.drill).toBe(true);
    expect(open.find((x) => x.deviceId === 'gate-1')!.drill).toBe(false);
    const acked = await alerting.acknowledge(desk, a!.id, 'desk', '演练，已到场 / drill, on site');
    expect(acked.state).toBe('acknowledged');
    expect(acked.acknowledgedBy).toBe('desk');
    expect(acked.ackComment).toContain('演练');
    await expect(alerting.acknowledge(desk, a!.id, 'desk', 'again')).rejects.toMatchObject({ code: 'conflict' });
    const mine = () => receiver.received().filter((d) => d.payload.alert.id === a!.id);
    receiver.failNext(1);
    await alerting.deliver(); // raised: 503 → retry in 1 s
    expect(mine()).toHaveLength(0);
    clock.advance(1000);
    await alerting.deliver(); // raised delivered
    await alerting.deliver(); // then acknowledged (in order)
    // what is delivered is what docs/openapi/provincial-modules.yaml describes
    const doc = parse(await readFile(new URL('../../docs/openapi/provincial-modules.yaml', import.meta.url), 'utf8'));
    const sent = mine()[0]!.payload as unknown as Record<string, unknown>;
    expect(Object.keys(sent).sort()).toEqual([...doc.components.schemas.Delivery.required].sort());
    expect(Object.keys(sent.alert as object).sort()).toEqual([...doc.components.schemas.Alert.required].sort());
    expect(doc.components.schemas.Delivery.properties.transition.enum).toContain(sent.transition);
    const resolved = await alerting.resolve(desk, a!.id, 'desk', 'done');
    expect(resolved.state).toBe('resolved');
    await alerting.deliver();
    expect(mine().map((d) => [d.payload.transition, d.payload.drill, d.payload.alert.drill])).toEqual([
      ['raised', true, true],
      ['acknowledged', true, true],
      ['resolved', true, true],
    ]);

    // the hazard module keeps failing: dead-lettered after 3 attempts, which raises a hazard alert of its own
    receiver.failNext(100);
    clock.advance(3_600_000); // the drill is over
    await alerting.listener.onStored(event('cam-1', 'onvif.tamper', clock.now()));
    for (let i = 0; i < 4; i++) {
      await alerting.deliver();
      clock.advance(5000);
    }
    const dead = await tdb.db.query<{ n: number }>(`select count(*)::int as n from alert_outbox where dead_at is not null`);
    expect(dead.rows[0]!.n).toBeGreaterThanOrEqual(1);
    const own = await alerting.list(desk, { ruleId: 'delivery-dead-letter', state: 'open' });
    expect(own).toHaveLength(1);
    expect(own[0]!.category).toBe('hazard');
    await alerting.stop();
    await receiver.close();
  });
});

describe('emergencies first', () => {
  it('an alarm event is evaluated and stored before bulk readings queued ahead of it', async () => {
    const tdb = await createTestDatabase('pglite');
    try {
      const clock = fakeClock();
      await seed(tdb, clock.now());
      const alerting = await createAlerting({ db: tdb.db, rules: await loadLibrary(), clock, tickMs: 0 });
      const order: string[] = [];
      const unlisten = await tdb.db.listen(ALERT_CHANNEL, (p) => {
        const c = JSON.parse(p);
        if (c.action === 'raised') order.push(c.ruleId);
      });
      const jobs: Promise<void>[] = [];
      for (let i = 0; i < 40; i++) jobs.push(alerting.listener.onStored(readings('temp-1', 'temperature', clock.now() + i, [20 + (i % 3)])));
      jobs.push(alerting.listener.onStored(readings('smoke-1', 'smoke_density', clock.now(), new Array(12).fill(0.3))));
      jobs.push(alerting.listener.onStored(event('gate-1', 'gate.forced_open', clock.now())));
      await Promise.all(jobs);
      await new Promise((r) => setTimeout(r, 100));
      expect(order.filter((r) => r === 'gate-forced' || r === 'smoke-sustained')).toEqual(['gate-forced', 'smoke-sustained']);
      await unlisten();
      await alerting.stop();
    } finally {
      await tdb.drop();
    }
  });
});

describe('escalation ladder', () => {
  it('goes school → county → city and stops', () => {
    expect(nextTier(SCHOOL, null)).toBe('37/3701/370102');
    expect(nextTier(SCHOOL, '37/3701/370102')).toBe('37/3701');
    expect(nextTier(SCHOOL, '37/3701')).toBeNull();
    expect(nextTier('37/4137010422/4137010422-03', null)).toBe('37/4137010422');
    expect(nextTier('37/4137010422/4137010422-03', '37/4137010422')).toBe('37');
  });
  it('compiles rules from text', () => {
    expect(compileRules([{ file: 'x.yaml', text: 'id: a\n' }]).errors.length).toBeGreaterThan(0);
  });
});
