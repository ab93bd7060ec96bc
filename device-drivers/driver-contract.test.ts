// One suite for the DeviceDriver seam, run against every protocol's driver: what the edge relies
// on holds for all of them.
import { afterEach, describe, expect, it } from 'vitest';
import { HEALTH_STATES, silentLogger, systemClock } from '../contract/index.ts';
import {
  createDriver, DriverError, getProfile, LineRegistry, startDeviceBroker, startGateSimulator, startModbusSimulator, startOnvifSimulator,
  type DeviceDriver, type ModbusProfile, type Observation,
} from './index.ts';

interface Rig {
  driver: DeviceDriver;
  /** make the device stop answering */
  breakDevice(): Promise<void>;
  /** let some time pass for push drivers */
  settle(): Promise<void>;
  close(): Promise<void>;
}

const rigs: Record<string, () => Promise<Rig>> = {
  async modbus() {
    const profile = (await getProfile('smoke-photoelectric-generic')) as ModbusProfile;
    const sim = await startModbusSimulator({ profile });
    const driver = await createDriver({ id: 'd', profile: profile.id, url: `${sim.url}&timeout=200` }, { clock: systemClock, log: silentLogger }, { modbus: { lines: new LineRegistry() } });
    return { driver, breakDevice: async () => sim.fault('silence'), settle: async () => {}, close: () => sim.close() };
  },
  async mqtt() {
    const broker = await startDeviceBroker({ authenticate: (u, p) => (u === 'gate-1' && p === 'pw' ? u : null), log: silentLogger });
    const driver = await createDriver({ id: 'd', profile: 'gate-controller-generic', url: 'mqtt://gate-1', intervalMs: 100 }, { clock: systemClock, log: silentLogger, deviceBroker: broker.handle });
    const gate = await startGateSimulator({ brokerUrl: broker.url, deviceId: 'gate-1', username: 'gate-1', password: 'pw', heartbeatMs: 30 });
    let gateOpen = true;
    return {
      driver,
      // the gate falls silent: after three of its intervals it is offline
      breakDevice: async () => {
        gateOpen = false;
        await gate.close();
      },
      settle: () => new Promise((r) => setTimeout(r, 400)),
      close: async () => {
        if (gateOpen) await gate.close();
        await broker.close();
      },
    };
  },
  async onvif() {
    const sim = await startOnvifSimulator({ pullWaitMs: 100 });
    const driver = await createDriver({ id: 'd', profile: 'onvif-camera-generic', url: sim.url }, { clock: systemClock, log: silentLogger });
    return { driver, breakDevice: async () => sim.hostile('garbage'), settle: () => new Promise((r) => setTimeout(r, 300)), close: () => sim.close() };
  },
};

describe.each(Object.keys(rigs))('DeviceDriver contract: %s', (name) => {
  let rig: Rig | null = null;
  afterEach(async () => {
    await rig?.driver.close();
    await rig?.close();
    rig = null;
  });

  it('reports health as state, observes, survives a broken device without throwing, and closes twice', async () => {
    rig = await rigs[name]!();
    const { driver } = rig;
    const seen: Observation[] = [];
    if (driver.subscribe) await driver.subscribe((o) => seen.push(o));
    if (driver.poll) seen.push(...(await driver.poll()));
    await rig.settle();
    expect(seen.length).toBeGreaterThan(0);
    for (const o of seen) expect(Number.isFinite(o.ts)).toBe(true);
    const h = driver.health();
    expect(HEALTH_STATES).toContain(h.state);
    expect(h).toEqual({ state: 'online', lastSeen: expect.any(Number), consecutiveFailures: 0, timeouts: expect.any(Number), errors: expect.any(Number), crcErrors: expect.any(Number), lastError: null });

    await rig.breakDevice();
    for (let i = 0; i < 3; i++) if (driver.poll) await expect(driver.poll()).resolves.toBeInstanceOf(Array);
    await rig.settle();
    expect(driver.health().state).not.toBe('online');
    expect(driver.health().lastError).toEqual(expect.any(String));

    const err = await driver.write('no_such_point', 1).then(() => null, (e) => e);
    expect(err).toBeInstanceOf(DriverError);
    expect(err).toMatchObject({ code: 'not_writable', retryable: false });

    await driver.close();
    await driver.close();
    if (driver.poll) expect(await driver.poll()).toEqual([]);
  });
});
