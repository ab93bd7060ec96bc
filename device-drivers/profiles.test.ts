// One test over the whole catalogue: every profile loads, is consistent, and every Modbus profile
// round-trips each of its points through its own simulator and the driver.
import { describe, expect, it } from 'vitest';
import { deviceCapabilitiesSchema, gatewayStatusSchema, silentLogger, systemClock } from '../contract/index.ts';
import { profileCapabilities } from './profile-schema.ts';
import { ALARM_EVENT_TYPES, createDriver, loadProfiles, parseProfile, type ModbusProfile, type Observation } from './index.ts';
import { startModbusSimulator } from './modbus/simulator.ts';
import { LineRegistry } from './modbus/line.ts';
import { fromEngineering, MAX_READ_BITS, MAX_READ_REGISTERS, planReads, resolvePoints } from './modbus/codec.ts';

describe('the profile catalogue', async () => {
  const profiles = await loadProfiles({ reload: true });

  it('covers every kind of campus hardware the platform promises', () => {
    expect(new Set(profiles.map((p) => p.category))).toEqual(new Set(['fire', 'gas', 'environment', 'water', 'access', 'emergency', 'visitor', 'video', 'linkage']));
    for (const id of ['smoke-photoelectric-generic', 'temp-humidity-generic', 'gas-combustible-generic', 'water-pressure-generic', 'gate-controller-generic', 'emergency-button-generic', 'visitor-kiosk-generic', 'onvif-camera-generic'])
      expect(profiles.map((p) => p.id)).toContain(id);
  });

  it('every profile is consistent', () => {
    for (const p of profiles) {
      expect(p.description.zh, p.id).toMatch(/[\u4e00-\u9fff]/);
      expect(p.description.en.length, p.id).toBeGreaterThan(3);
      expect(p.poll.integrity, p.id).toBeGreaterThanOrEqual(p.poll.interval);
      const events: Array<{ type: string; priority?: string }> = [];
      if (p.protocol === 'modbus') {
        const pts = resolvePoints(p);
        for (const b of planReads(pts, p.modbus.maxGap)) expect(b.count).toBeLessThanOrEqual(b.fc <= 2 ? MAX_READ_BITS : MAX_READ_REGISTERS);
        for (const pt of pts) {
          if (pt.event) events.push({ type: pt.event, priority: pt.priority });
          for (const b of pt.bits ?? []) if (b.event) events.push({ type: b.event, priority: b.priority });
          if (pt.writable && pt.table === 'holding') {
            // a writable register can encode both ends of its declared range
            for (const v of [pt.min ?? 0, pt.max ?? 0]) expect(() => fromEngineering(v, pt), `${p.id}.${pt.name}=${v}`).not.toThrow();
          }
        }
      }
      if (p.protocol === 'mqtt') {
        const personal = new Set(p.mqtt.privacy.map((f) => f.field).filter((f) => p.mqtt.privacy.find((x) => x.field === f)?.kind === 'resident-id'));
        for (const m of p.mqtt.messages) {
          if (m.event) events.push(m.event);
          // a clear resident ID can never be mapped into an event or a reading
          for (const field of Object.values(m.event?.data ?? {})) expect(personal.has(field), `${p.id} maps ${field}`).toBe(false);
          for (const r of m.readings ?? []) expect(personal.has(r.field)).toBe(false);
        }
      }
      if (p.protocol === 'onvif') for (const e of p.onvif.events) events.push(e);
      for (const e of events) if (ALARM_EVENT_TYPES.has(e.type)) expect(e.priority ?? 'alarm', `${p.id} ${e.type}`).toBe('alarm');
    }
  });

  it('capabilities: every writable release point declares evacuation-release, every alarm event its kind, and the birth carries them', () => {
    const writable: Array<{ at: string; name: string; capability?: string }> = [];
    for (const p of profiles) {
      if (p.protocol === 'modbus')
        for (const pt of p.points) {
          if (pt.writable) writable.push({ at: `${p.id}.${pt.name}`, name: pt.name, capability: pt.capability });
          if (pt.writable && pt.table === 'coil') for (const b of pt.bits ?? []) writable.push({ at: `${p.id}.${b.name}`, name: b.name, capability: b.capability });
        }
      if (p.protocol === 'mqtt') for (const [name, c] of Object.entries(p.mqtt.commands)) writable.push({ at: `${p.id}.${name}`, name, capability: c.capability });
      const caps = profileCapabilities(p);
      // what the birth message carries fits the contract's bounds
      expect(deviceCapabilitiesSchema.safeParse(caps).success, p.id).toBe(true);
      // exits are releasable in a fire; cameras take snapshots; alarm events say what they are
      if (p.category === 'access') expect(caps['evacuation-release']?.length, `${p.id} can be released`).toBeGreaterThan(0);
      if (p.category === 'video') expect(caps.snapshot, p.id).toBe(true);
      for (const t of ALARM_EVENT_TYPES) {
        const emits = JSON.stringify(p).includes(`"${t}"`);
        if (emits) expect(caps.alarms?.[t], `${p.id} declares the kind of ${t}`).toBeDefined();
      }
      // the loader derived the same capabilities the edge puts in the birth
      expect((p as { capabilities?: unknown }).capabilities, p.id).toEqual(caps);
    }
    for (const w of writable) if (w.name.includes('release')) expect(w.capability, `${w.at} is a release point`).toBe('evacuation-release');
    // and the relay's door releases are found by their capability, not their names
    const relay = profileCapabilities(profiles.find((p) => p.id === 'relay-output-8ch-generic')!);
    expect(relay['evacuation-release']).toEqual([{ point: 'door_release_east', value: true }, { point: 'door_release_west', value: true }]);
    expect(gatewayStatusSchema.safeParse({ v: 1, gateway: 'gw-3737000001', state: 'online', ts: Date.now(), devices: [{ id: 'relay-1', profile: 'relay-output-8ch-generic', state: 'online', lastSeen: null, capabilities: relay }] }).error).toBeUndefined();
  });

  it('a capability that cannot work is refused: on a read-only point, or with nothing to write', () => {
    const base = 'id: odd-model-q1\nprotocol: modbus\ncategory: access\ndescription: { zh: 闸机, en: A turnstile }\npoll: { interval: 5s, integrity: 5m }\npoints:\n';
    const bad = parseProfile('odd-model-q1.yaml', base + '  - { name: exit, table: discrete, address: 0, type: bool, capability: evacuation-release }\n  - { name: mode, table: holding, address: 0, type: uint16, writable: true, capability: evacuation-release }\n');
    expect(bad.problems.join('\n')).toMatch(/exit: capability evacuation-release needs a writable point/);
    expect(bad.problems.join('\n')).toMatch(/mode: capability evacuation-release needs capabilityValue/);
    const good = parseProfile('odd-model-q1.yaml', base + '  - { name: mode, table: holding, address: 0, type: uint16, writable: true, capability: evacuation-release, capabilityValue: 3 }\n  - { name: forced, table: discrete, address: 0, type: bool, event: gate.forced_open, alarm: intrusion }\n');
    expect(good.problems).toEqual([]);
    expect(profileCapabilities(good.profile!)).toEqual({ 'evacuation-release': [{ point: 'mode', value: 3 }], alarms: { 'gate.forced_open': 'intrusion' } });
    // an event declared as an alarm is priority alarm without saying so twice
    expect((good.profile as ModbusProfile).points[1]!.priority).toBe('alarm');
  });

  it('the gas detector carries the two GB/T 50493-2019 alarm levels within 25 % and 50 % LEL', () => {
    const gas = profiles.find((p) => p.id === 'gas-combustible-generic') as ModbusProfile;
    expect(gas.points.filter((p) => p.event === 'gas.alarm').map((p) => p.data?.level)).toEqual([1, 2]);
    expect(gas.points.find((p) => p.name === 'alarm1_setpoint')?.max).toBeLessThanOrEqual(25);
    expect(gas.points.find((p) => p.name === 'alarm2_setpoint')?.max).toBeLessThanOrEqual(50);
    expect(gas.points.find((p) => p.name === 'lel_percent')?.unit).toBe('%LEL');
  });

  it('the kiosk protects resident ID numbers', () => {
    const kiosk = profiles.find((p) => p.id === 'visitor-kiosk-generic');
    expect(kiosk?.protocol === 'mqtt' && kiosk.mqtt.privacy).toContainEqual({ field: 'idNumber', kind: 'resident-id' });
  });

  it('every Modbus profile round-trips each point through its simulator and the driver', async () => {
    for (const p of profiles.filter((x): x is ModbusProfile => x.protocol === 'modbus')) {
      const expected: Record<string, number> = {};
      const initial: Record<string, number | boolean | string> = {};
      resolvePoints(p).forEach((pt, i) => {
        if (pt.type === 'bool') initial[pt.name] = expected[pt.name] = i % 2;
        else if (pt.type === 'bitfield') for (const b of pt.bits ?? []) initial[b.name] = expected[b.name] = b.bit % 2 === 0 ? 1 : 0;
        else if (pt.type === 'enum') initial[pt.name] = expected[pt.name] = Number(Object.keys(pt.enum ?? {})[1] ?? 0);
        else {
          const v = pt.min !== undefined ? (pt.min + (pt.max ?? pt.min)) / 2 : pt.rawType.startsWith('int') ? -12 * pt.scale + pt.offset : 123 * pt.scale + pt.offset;
          initial[pt.name] = v;
          expected[pt.name] = pt.rawType === 'float32' ? Math.fround(v) : Number(v.toPrecision(12));
        }
        if (!pt.reading) delete expected[pt.name];
      });
      const sim = await startModbusSimulator({ profile: p, initial });
      const driver = await createDriver({ id: 'dev', profile: p.id, url: sim.url }, { clock: systemClock, log: silentLogger }, { modbus: { lines: new LineRegistry() } });
      try {
        const obs = await driver.poll!();
        const got = Object.fromEntries(obs.filter((o): o is Extract<Observation, { kind: 'reading' }> => o.kind === 'reading').map((o) => [o.metric, o.value]));
        for (const [k, v] of Object.entries(expected)) expect(got[k], `${p.id}.${k}`).toBeCloseTo(v, 5);
        expect(driver.health().state, p.id).toBe('online');
      } finally {
        await driver.close();
        await sim.close();
      }
    }
  });

  it('a broken profile is reported with every problem at once, each with its path', () => {
    const r = parseProfile('bad.yaml', [
      'id: Bad_ID',
      'protocol: modbus',
      'category: fire',
      'description: { zh: 坏, en: bad }',
      'poll: { interval: 5 parsecs, integrity: 5m }',
      'points:',
      '  - { name: a, table: discrete, address: 0, type: uint16 }',
      '  - { name: b, table: holding, address: 0, type: float32 }',
      '  - { name: c, table: holding, address: 1, type: uint16, writable: true }',
    ].join('\n'));
    expect(r.profile).toBeUndefined();
    expect(r.problems).toEqual([
      expect.stringMatching(/^bad\.yaml: id: id: lower case/),
      expect.stringMatching(/^bad\.yaml: poll\.interval: duration "5 parsecs"/),
    ]);
    const r2 = parseProfile('bad2.yaml', [
      'id: bad-two',
      'protocol: modbus',
      'category: fire',
      'description: { zh: 坏, en: bad }',
      'poll: { interval: 5s, integrity: 5m }',
      'points:',
      '  - { name: a, table: discrete, address: 0, type: uint16 }',
      '  - { name: b, table: holding, address: 0, type: float32 }',
      '  - { name: c, table: holding, address: 1, type: uint16, writable: true }',
    ].join('\n'));
    expect(r2.problems).toEqual([
      'bad2.yaml: points[0] a: discrete points are type bool (or bitfield over consecutive bits)',
      'bad2.yaml: points[2] c: holding address 1 overlaps b',
    ]);
  });
});
