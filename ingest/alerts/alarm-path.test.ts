// The alarm path on the real store (issue 12): never lost, never masked, linked by capability.
// Each finding of the outside probes is an example here, on both engines:
// - Lost: a watch-list hit the desk resolved must not latch the kiosk forever (nor across restarts).
// - Masked: during a drill only what the drill stages is a drill; a real alarm stays real.
// - Linked by name: a gate whose model id says nothing of gates is released in a fire.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Clock, Command, CommandResult, DeviceCapabilities, DeviceEvent } from '../../contract/index.ts';
import { parseProfile } from '../../device-drivers/profiles.ts';
import { profileCapabilities } from '../../device-drivers/profile-schema.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../../test/support/databases.ts';
import { scopeOf } from '../scope.ts';
import { openStore, type Store } from '../store.ts';
import type { StoredBatch } from '../types.ts';
import { createAlerting, loadLibrary, startReferenceReceiver, type Alerting, type AlertingOptions } from './index.ts';

const T0 = Date.parse('2026-11-30T02:00:00Z');
// each test its own school and gateway in one database per engine (a database is slow to make)
let n = 0;
let SCHOOL = '';
let GW = '';
let desk = scopeOf('37');

function fakeClock(start = T0): Clock & { advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms), setTimeout: () => 0, clearTimeout: () => {}, setInterval: () => 0, clearInterval: () => {} };
}

// A turnstile whose model id names nothing: only its profile's capability says it opens in a fire.
const TURNSTILE = `
id: turnstile-model-x9
protocol: mqtt
category: access
description: { zh: 三辊闸 X9, en: Tripod turnstile X9 }
poll: { interval: 30s, integrity: 5m }
mqtt:
  messages:
    - { topic: event, match: { type: forced }, event: { type: gate.forced_open, alarm: intrusion } }
  commands:
    free_all_lanes: { topic: cmd, payload: { mode: $value }, capability: evacuation-release, capabilityValue: free-passage }
`;

let seq = 0;
const events = (device: string, type: string, ts: number, drill = false): StoredBatch => ({
  gateway: { id: GW, orgPath: SCHOOL, county: '370102' },
  readings: [],
  events: [{ seq: ++seq, device, type, ts, priority: 'alarm', drill, data: {} } as DeviceEvent],
});

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.each(ENGINES)('the alarm path on %s', (engine) => {
  let tdb: TestDatabase;
  let store: Store;
  const running: Alerting[] = [];
  const commands: Command[] = [];
  const sender = { async send(_gw: string, c: Command): Promise<CommandResult> { commands.push(c); return { v: 1, id: c.id, ok: true, ts: T0 }; } };

  beforeAll(async () => {
    tdb = await createTestDatabase(engine);
    store = await openStore(tdb.db);
    await store.seedOrgTree({ demo: true });
  });
  afterAll(async () => {
    await store?.close();
    await tdb?.drop();
  });
  beforeEach(async () => {
    const code = `37379${String(++n).padStart(5, '0')}`;
    SCHOOL = `37/3701/370102/${code}`;
    GW = `gw-${code}`;
    desk = scopeOf(SCHOOL);
    await store.upsertOrgNode({ path: SCHOOL, nameZh: `测试学校 ${n}` });
    await store.registerGateway({ id: GW, county: '370102', orgPath: SCHOOL, password: 'secret-gw-123' });
    const turnstile = parseProfile('turnstile-model-x9.yaml', TURNSTILE);
    expect(turnstile.problems).toEqual([]);
    const caps = (c: DeviceCapabilities) => ({ capabilities: c });
    // the birth message, as edge/gateway.ts sends it: capabilities come from each device's profile
    await store.applyGatewayStatus({
      v: 1, gateway: GW, state: 'online', ts: T0 - 1000,
      devices: [
        { id: 'kiosk-1', profile: 'visitor-kiosk-generic', state: 'online', lastSeen: T0 - 1000, building: 'Gate', ...caps({ alarms: { 'visitor.watchlist': 'visitor-watchlist' } }) },
        { id: 'smoke-1', profile: 'smoke-photoelectric-generic', state: 'online', lastSeen: T0 - 1000, building: 'A', room: '101', ...caps({ alarms: { 'smoke.alarm': 'fire' } }) },
        { id: 'smoke-2', profile: 'smoke-photoelectric-generic', state: 'online', lastSeen: T0 - 1000, building: 'B', room: '201', ...caps({ alarms: { 'smoke.alarm': 'fire' } }) },
        { id: 'turnstile-1', profile: 'turnstile-model-x9', state: 'online', lastSeen: T0 - 1000, building: 'A', ...caps(profileCapabilities(turnstile.profile!)) },
        { id: 'turnstile-2', profile: 'turnstile-model-x9', state: 'online', lastSeen: T0 - 1000, building: 'B', ...caps(profileCapabilities(turnstile.profile!)) },
        { id: 'lens-7', profile: 'dome-z3', state: 'online', lastSeen: T0 - 1000, building: 'A', room: '101', ...caps({ snapshot: true }) },
        { id: 'button-1', profile: 'emergency-button-generic', state: 'online', lastSeen: T0 - 1000, building: 'Gate', ...caps({ alarms: { 'button.pressed': 'panic' } }) },
      ],
    });
    commands.length = 0;
  });
  afterEach(async () => {
    for (const a of running.splice(0)) await a.stop();
  });

  const start = async (clock: Clock, extra: Partial<AlertingOptions> = {}) => {
    const a = await createAlerting({
      db: tdb.db, rules: await loadLibrary(), clock, tickMs: 0, commands: sender, deliverOnChange: false,
      linkage: { snapshot: async () => ({ mime: 'image/jpeg', data: Buffer.from([0xff, 0xd8, 0xff, 0xd9]) }) },
      ...extra,
    });
    running.push(a);
    return a;
  };
  const stop = async (a: Alerting) => {
    await a.stop();
    running.splice(running.indexOf(a), 1);
  };
  const watchlistAlerts = (a: Alerting) => a.list(desk, { ruleId: 'visitor-watchlist' });

  it('Lost: after the desk resolves a watch-list alert, the next watch-listed visitor raises again, also after a restart', async () => {
    const clock = fakeClock();
    let a = await start(clock);
    await a.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
    const [first] = await watchlistAlerts(a);
    expect(first!.state).toBe('raised');
    // a second hit while it is open is the same alert
    clock.advance(1000);
    await a.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
    expect(await watchlistAlerts(a)).toHaveLength(1);
    await a.resolve(desk, first!.id, 'desk', '已处置');
    clock.advance(60_000);
    await a.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
    const afterResolve = await watchlistAlerts(a);
    expect(afterResolve.map((x) => x.state).sort()).toEqual(['raised', 'resolved']);

    // across a restart: resolve, restart, a new hit raises
    await a.resolve(desk, afterResolve.find((x) => x.state === 'raised')!.id, 'desk');
    await stop(a);
    a = await start(clock);
    clock.advance(60_000);
    await a.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
    expect((await watchlistAlerts(a)).filter((x) => x.state === 'raised')).toHaveLength(1);
    // and an open alert survives a restart without a second one being raised
    await stop(a);
    a = await start(clock);
    await a.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now() + 1000));
    expect((await watchlistAlerts(a)).filter((x) => x.state === 'raised')).toHaveLength(1);
    expect(await watchlistAlerts(a)).toHaveLength(3);
  });

  it('Lost: state saved by the old latch ({ a: 1 }) with the alert already resolved does not swallow the next hit', async () => {
    const clock = fakeClock();
    let a = await start(clock);
    await a.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
    const [first] = await watchlistAlerts(a);
    await stop(a);
    // what the probes found in rule_state: the latch, and the alert resolved by the desk
    const key = `visitor-watchlist|${GW}|kiosk-1`;
    await tdb.db.query(`update rule_state set state = jsonb_set(state, array['states', $1::text], $2::jsonb) where site = $3`, [key, JSON.stringify({ o: SCHOOL, g: GW, d: 'kiosk-1', a: 1, le: clock.now() }), SCHOOL]);
    await tdb.db.query(`update alerts set state = 'resolved', resolved_at = now(), resolved_by = 'desk' where id = $1`, [first!.id]);
    a = await start(clock);
    clock.advance(60_000);
    await a.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
    expect((await watchlistAlerts(a)).filter((x) => x.state === 'raised')).toHaveLength(1);
  });

  it('Lost: resolved by another process (the dashboards), the ingest worker still raises the next hit', async () => {
    const clock = fakeClock();
    const ingest = await start(clock);
    const serve = await start(clock, { commands: undefined }); // `xiaoan serve`: the desk's API, evaluates nothing
    await ingest.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
    const [first] = await watchlistAlerts(serve);
    await serve.resolve(desk, first!.id, 'desk');
    clock.advance(30_000);
    await ingest.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
    expect((await watchlistAlerts(ingest)).filter((x) => x.state === 'raised')).toHaveLength(1);
  });

  it('Masked: during a drill staging smoke-2, real alarms elsewhere are real (delivered, linked); the staged device and a test press are drills', async () => {
    const clock = fakeClock();
    const receiver = await startReferenceReceiver({ secret: 'k', now: clock.now });
    try {
      const a = await start(clock, { delivery: { hazardUrl: receiver.hazardUrl, emergencyUrl: receiver.emergencyUrl, secret: 'k' } });
      const drill = await a.startDrill(desk, SCHOOL, 30, 'desk', ['smoke-2']);
      expect(drill.devices).toEqual([`${GW}/smoke-2`]);
      await a.listener.onStored(events('smoke-2', 'smoke.alarm', clock.now()));
      await a.listener.onStored(events('smoke-1', 'smoke.alarm', clock.now()));
      await a.listener.onStored(events('kiosk-1', 'visitor.watchlist', clock.now()));
      await a.listener.onStored(events('turnstile-2', 'gate.forced_open', clock.now(), true)); // a device's test press
      const all = await a.list(desk, { state: 'open' });
      const drillOf = (device: string) => all.find((x) => x.deviceId === device)?.drill;
      expect([drillOf('smoke-2'), drillOf('smoke-1'), drillOf('kiosk-1'), drillOf('turnstile-2')]).toEqual([true, false, false, true]);
      // the real fire's linkage is carried out: building A's turnstile released, a snapshot attached
      const real = all.find((x) => x.deviceId === 'smoke-1')!;
      const staged = all.find((x) => x.deviceId === 'smoke-2')!;
      await until('real fire linkage', async () => (await a.actions(desk, real.id)).filter((x) => x.ok).length >= 2);
      expect((await a.attachments(desk, real.id)).length).toBe(1);
      await until('watch-list snapshot', async () => (await a.attachments(desk, all.find((x) => x.deviceId === 'kiosk-1')!.id)).length === 1);
      // the staged device's linkage is recorded, not carried out
      await until('drill linkage audit', async () => (await a.actions(desk, staged.id)).length >= 2);
      expect((await a.actions(desk, staged.id)).every((x) => x.detail.includes('drill'))).toBe(true);
      expect(commands.map((c) => c.kind === 'device.write' && [c.device, c.point, c.value])).toEqual([['turnstile-1', 'free_all_lanes', 'free-passage']]);
      // delivered as they are: the provincial emergency module is told which are drills
      await a.deliver();
      const sent = new Map(receiver.received().filter((d) => d.payload.transition === 'raised' && d.payload.alert.orgPath === SCHOOL).map((d) => [d.payload.alert.deviceId, d.payload.drill]));
      expect(Object.fromEntries(sent)).toEqual({ 'smoke-2': true, 'smoke-1': false, 'kiosk-1': false, 'turnstile-2': true });
    } finally {
      await receiver.close();
    }
  });

  it('Linked by name: a fire releases every device that declares evacuation-release in the building, whatever its model is called', async () => {
    const clock = fakeClock();
    const a = await start(clock);
    await a.listener.onStored(events('smoke-2', 'smoke.alarm', clock.now()));
    const [fire] = await a.list(desk, { ruleId: 'smoke-alarm' });
    await until('release', async () => (await a.actions(desk, fire!.id)).some((x) => x.action === 'release-gates'));
    expect(commands.map((c) => c.kind === 'device.write' && [c.device, c.point, c.value])).toEqual([['turnstile-2', 'free_all_lanes', 'free-passage']]);
    // the camera is found by its snapshot capability (its model is "dome-z3"); none in B, so the site's
    await until('snapshot', async () => (await a.actions(desk, fire!.id)).some((x) => x.action === 'snapshot'));
    expect((await a.actions(desk, fire!.id)).find((x) => x.action === 'snapshot')).toMatchObject({ deviceId: 'lens-7', ok: true });
  });
});
