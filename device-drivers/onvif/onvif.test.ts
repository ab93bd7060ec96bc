// The ONVIF driver (over the `onvif` package) against our ONVIF simulator, including broken and
// hostile cameras. No exception may escape the driver: the file fails on any uncaught one.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger, systemClock } from '../../contract/index.ts';
import { createDriver, getProfile, freePort, type Observation, type OnvifProfile } from '../index.ts';
import { createOnvifDriver, type OnvifDriver } from './driver.ts';
import { startOnvifSimulator, type OnvifSimulator } from './simulator.ts';
import { discoverOnvif } from './discovery.ts';
import { normaliseTopic } from './driver.ts';
import { checkXml } from './xml.ts';

const escaped: unknown[] = [];
const onUncaught = (e: unknown) => escaped.push(e);
beforeAll(() => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
});
afterAll(() => {
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
  expect(escaped).toEqual([]);
});

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => {});
});

function skewedClock() {
  let skew = 0;
  return { ...systemClock, now: () => Date.now() + skew, advance: (ms: number) => void (skew += ms) };
}

async function rig(o: { callTimeoutMs?: number; clock?: ReturnType<typeof skewedClock>; url?: (s: OnvifSimulator) => string } = {}) {
  const sim = await startOnvifSimulator({ pullWaitMs: 200 });
  cleanup.push(() => sim.close());
  const profile = (await getProfile('onvif-camera-generic')) as OnvifProfile;
  const driver = await createOnvifDriver({ id: 'cam-1', profile: profile.id, url: o.url ? o.url(sim) : sim.url }, profile, { clock: o.clock ?? systemClock, log: silentLogger }, { callTimeoutMs: o.callTimeoutMs ?? 3000, backoffBaseMs: 50 });
  cleanup.push(() => driver.close());
  return { sim, driver };
}

function until<T>(fn: () => T | undefined | false, ms = 5000, label = fn.toString()): Promise<T> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const tick = () => {
      const v = fn();
      if (v !== undefined && v !== false) return resolve(v as T);
      if (Date.now() - t0 > ms) return reject(new Error(`condition not met in time: ${label}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

describe('ONVIF driver against the simulator', () => {
  it('connects with credentials and reads device information, media profiles, stream and snapshot URIs, and a snapshot', async () => {
    const { driver } = await rig();
    const info = await driver.describe();
    expect(info).toMatchObject({ manufacturer: 'Xiaoan', model: 'SIM-IPC-1', serial: 'SIM0001', streamUri: 'rtsp://127.0.0.1:8554/main' });
    expect(info.profiles.map((p) => [p.token, p.width, p.height])).toEqual([['main', 1920, 1080], ['sub', 640, 360]]);
    expect(info.snapshotUri).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/snapshot\.jpg$/);
    const jpg = await driver.snapshot();
    expect([jpg[0], jpg[1], jpg[jpg.length - 2], jpg[jpg.length - 1]]).toEqual([0xff, 0xd8, 0xff, 0xd9]);
    expect(await driver.poll!()).toEqual([expect.objectContaining({ kind: 'reading', metric: 'online', value: 1 })]);
    expect(driver.health().state).toBe('online');
  });

  it('maps PullPoint events to contract events, once per rising state; renews at half the lifetime; re-subscribes after a camera reboot', async () => {
    const clock = skewedClock();
    const { sim, driver } = await rig({ clock });
    const obs: Observation[] = [];
    await driver.subscribe!((o) => obs.push(o));
    await until(() => sim.stats().subscriptions === 1);
    sim.emit('tns1:RuleEngine/CellMotionDetector/Motion', { IsMotion: true });
    sim.emit('tns1:RuleEngine/CellMotionDetector/Motion', { IsMotion: true }); // repeated state: no second event
    sim.emit('tns1:RuleEngine/TamperDetector/Tamper', { IsTamper: true });
    sim.emit('tns1:RuleEngine/LineDetector/Crossed', { ObjectId: 7 });
    sim.emit('tns1:Device/Trigger/DigitalInput', { LogicalState: true }); // not in the profile: ignored
    await until(() => obs.length >= 3);
    await new Promise((r) => setTimeout(r, 300));
    expect(obs.map((o) => (o.kind === 'event' ? o.type : o.kind))).toEqual(['onvif.motion', 'onvif.tamper', 'onvif.line_crossing']);
    expect(obs[0]).toMatchObject({ priority: 'normal', data: { topic: 'RuleEngine/CellMotionDetector/Motion', source: 'vsc0' } });

    sim.emit('tns1:RuleEngine/CellMotionDetector/Motion', { IsMotion: false });
    sim.emit('tns1:RuleEngine/CellMotionDetector/Motion', { IsMotion: true });
    await until(() => obs.filter((o) => o.kind === 'event' && o.type === 'onvif.motion').length === 2);

    clock.advance(61_000); // past half of the camera's 2-minute subscription
    await until(() => sim.stats().renewals >= 1);

    sim.dropSubscriptions();
    await until(() => sim.stats().requests.CreatePullPointSubscription! >= 2);
    sim.emit('tns1:RuleEngine/TamperDetector/Tamper', { IsTamper: false });
    sim.emit('tns1:RuleEngine/TamperDetector/Tamper', { IsTamper: true });
    await until(() => obs.filter((o) => o.kind === 'event' && o.type === 'onvif.tamper').length === 2);
  });

  it('wrong credentials: one clear error, offline at once (no retry storm that locks the account)', async () => {
    const { driver } = await rig({ url: (s) => s.url.replace(/:admin123@/, ':wrong@') });
    await expect(driver.describe()).rejects.toMatchObject({ code: 'unauthorized', message: expect.stringMatching(/wrong credentials/) });
    expect(driver.health()).toMatchObject({ state: 'offline', lastError: expect.stringMatching(/wrong credentials/) });
  });

  it('a closed port is connection refused; poll does not throw', async () => {
    const port = await freePort();
    const driver = await createDriver({ id: 'cam-x', profile: 'onvif-camera-generic', url: `onvif://a:b@127.0.0.1:${port}` }, { clock: systemClock, log: silentLogger });
    cleanup.push(() => driver.close());
    expect(await driver.poll!()).toEqual([]);
    expect(driver.health().lastError).toMatch(/connection refused/);
  });

  it('WS-Discovery by unicast finds the simulator', async () => {
    const { sim } = await rig();
    const found = await discoverOnvif({ address: '127.0.0.1', port: sim.discoveryPort, timeoutMs: 300 });
    expect(found).toEqual([expect.objectContaining({ url: `onvif://127.0.0.1:${sim.port}`, name: 'SIM-IPC-1', xaddrs: [sim.xaddr] })]);
    expect(sim.stats().discoveryProbes).toBe(1);
  });
});

describe('topics and XML guards', () => {
  it('namespace prefixes are ignored when matching topics', () => {
    expect(normaliseTopic('tns1:RuleEngine/CellMotionDetector/Motion')).toBe('RuleEngine/CellMotionDetector/Motion');
    expect(normaliseTopic(' tns1:RuleEngine/hikvision.xsd:LineDetector/tt:Crossed ')).toBe('RuleEngine/LineDetector/Crossed');
  });
  it('discovery replies with a DTD or over the size limit are refused before reading', () => {
    expect(() => checkXml('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')).toThrow(/DOCTYPE or ENTITY/);
    expect(() => checkXml('<x>' + 'a'.repeat(300 * 1024) + '</x>')).toThrow(/exceeds/);
  });
});

describe('hostile and broken cameras', () => {
  it.each([
    ['huge', 'response_too_large'],
    ['entity-expansion', 'bad_response'],
    ['external-entity', 'bad_response'],
    ['wrong-shape', 'bad_response'],
    ['garbage', 'bad_response'],
  ] as const)('%s answer → %s, camera offline, nothing escapes', async (mode, code) => {
    const { sim, driver } = await rig();
    sim.hostile(mode, { operations: ['GetDeviceInformation', 'GetProfiles'], bytes: 20 * 1024 * 1024 });
    const err = await driver.describe().then(() => null, (e) => e);
    expect(err).toMatchObject({ name: 'DriverError', code });
    expect(JSON.stringify(err.message)).not.toMatch(/root:|lollol/); // no entity was expanded
    expect(driver.health().state).not.toBe('online');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    sim.hostile('none');
    await new Promise((r) => setTimeout(r, 120)); // past the 50 ms backoff
    await expect(driver.describe()).resolves.toMatchObject({ model: 'SIM-IPC-1' });
    expect(driver.health().state).toBe('online');
  });

  it('a snapshot past the size cap is refused (the fetch answers the camera\'s Digest challenge first)', async () => {
    const { sim, driver } = await rig();
    await driver.describe();
    sim.hostile('huge', { operations: ['snapshot'], bytes: 12 * 1024 * 1024 });
    await expect(driver.snapshot()).rejects.toMatchObject({ code: 'response_too_large' });
    sim.hostile('none');
    const before = sim.stats().authFailures;
    expect((await driver.snapshot()).length).toBeGreaterThan(4);
    expect(sim.stats().authFailures).toBe(before + 1); // one 401 challenge, then Digest accepted
  });

  it('a camera that drips its answer a byte at a time is cut off by the total deadline', async () => {
    const { sim, driver } = await rig({ callTimeoutMs: 800 });
    sim.hostile('slow');
    await expect(driver.describe()).rejects.toMatchObject({ code: 'timeout' });
  });

  it('hostile event answers while subscribed: counted, no event invented, the loop goes on', async () => {
    const { sim, driver } = await rig();
    const obs: Observation[] = [];
    await driver.subscribe!((o) => obs.push(o));
    await until(() => sim.stats().subscriptions === 1);
    sim.hostile('wrong-shape', { operations: ['PullMessages'] });
    await until(() => driver.health().state !== 'online');
    sim.hostile('none');
    // events raised before the new subscription exists are lost, as with a real camera: wait for it
    await until(() => sim.stats().requests.CreatePullPointSubscription! >= 2 && driver.health().state === 'online');
    sim.emit('tns1:VideoSource/MotionAlarm', { State: true });
    await until(() => obs.length === 1, 5000, `one event; stats ${JSON.stringify(sim.stats())} health ${JSON.stringify(driver.health())}`);
    expect(obs[0]).toMatchObject({ type: 'onvif.motion' });
  });
});
