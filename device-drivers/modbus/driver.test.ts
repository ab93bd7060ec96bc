import { afterEach, describe, expect, it } from 'vitest';
import { createLogger, silentLogger, systemClock } from '../../contract/index.ts';
import { createDriver, getProfile, freePort, type DeviceDriver, type ModbusProfile, type Observation } from '../index.ts';
import { startModbusSimulator, type ModbusSimulator } from './simulator.ts';
import { LineRegistry } from './line.ts';

const ctx = { clock: systemClock, log: silentLogger };
/** the system clock, moved forward on demand (backoff windows without sleeping) */
function skewedClock() {
  let skew = 0;
  return { ...systemClock, now: () => Date.now() + skew, advance: (ms: number) => void (skew += ms) };
}
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function smokeRig(initial: Record<string, number | boolean> = {}, clock = systemClock) {
  const profile = (await getProfile('smoke-photoelectric-generic')) as ModbusProfile;
  const sim = await startModbusSimulator({ profile, initial: { smoke_density: 0.02, alarm_threshold: 0.15, ...initial } });
  cleanup.push(() => sim.close());
  const driver = await createDriver({ id: 'smoke-1', profile: profile.id, url: `${sim.url}&timeout=300` }, { ...ctx, clock }, { modbus: { lines: new LineRegistry() } });
  cleanup.push(() => driver.close());
  return { sim, driver, profile };
}

const readings = (o: Observation[]) => Object.fromEntries(o.filter((x) => x.kind === 'reading').map((x) => [(x as { metric: string }).metric, (x as { value: number }).value]));
const events = (o: Observation[]) => o.filter((x) => x.kind === 'event') as Extract<Observation, { kind: 'event' }>[];

describe('Modbus TCP driver against the profile-driven simulator', () => {
  it('reads normalised values and emits alarm events on rising edges only', async () => {
    const { sim, driver } = await smokeRig();
    const first = await driver.poll!();
    expect(readings(first)).toEqual({ smoke_density: 0.02, alarm: 0, fault: 0, alarm_threshold: 0.15 });
    expect(events(first)).toEqual([]);
    expect(driver.health()).toMatchObject({ state: 'online', consecutiveFailures: 0 });

    sim.set('smoke_density', 0.231);
    sim.set('alarm', true);
    const second = await driver.poll!();
    expect(readings(second).smoke_density).toBe(0.231);
    expect(events(second)).toEqual([expect.objectContaining({ type: 'smoke.alarm', priority: 'alarm', data: { point: 'alarm' } })]);
    // still in alarm: no second event
    expect(events(await driver.poll!())).toEqual([]);
    sim.set('alarm', false);
    expect(events(await driver.poll!()).map((e) => e.type)).toEqual(['smoke.clear']);
  });

  it('an alarm already active at the first poll is reported', async () => {
    const { driver } = await smokeRig({ alarm: true });
    expect(events(await driver.poll!()).map((e) => e.type)).toEqual(['smoke.alarm']);
  });

  it('writes a holding register in engineering units (FC 6) and refuses out-of-range or unknown points', async () => {
    const { sim, driver } = await smokeRig();
    await driver.write('alarm_threshold', 0.12);
    expect(sim.get('alarm_threshold')).toBe(0.12);
    await expect(driver.write('alarm_threshold', 5)).rejects.toMatchObject({ code: 'bad_value', retryable: false });
    await expect(driver.write('smoke_density', 1)).rejects.toMatchObject({ code: 'not_writable' });
  });

  it('writes a float32 set-point in word-swapped order with one FC 16 request', async () => {
    const profile = (await getProfile('water-pressure-generic')) as ModbusProfile;
    const sim = await startModbusSimulator({ profile, initial: { pressure: 0.35, low_limit: 0.1 } });
    cleanup.push(() => sim.close());
    const driver = await createDriver({ id: 'wp-1', profile: profile.id, url: sim.url }, ctx, { modbus: { lines: new LineRegistry() } });
    cleanup.push(() => driver.close());
    expect(readings(await driver.poll!()).pressure).toBeCloseTo(0.35, 6);
    const before = sim.requests[16] ?? 0;
    await driver.write('low_limit', 0.25);
    expect(sim.requests[16]).toBe(before + 1);
    expect(sim.get('low_limit')).toBeCloseTo(0.25, 6);
    expect(readings(await driver.poll!()).low_limit).toBeCloseTo(0.25, 6);
  });

  it('relay module: a coil field is read with FC 1, written whole with FC 15 and bit by bit with FC 5', async () => {
    const profile = (await getProfile('relay-output-8ch-generic')) as ModbusProfile;
    const sim = await startModbusSimulator({ profile, initial: { door_east_open: true } });
    cleanup.push(() => sim.close());
    const driver = await createDriver({ id: 'relay-1', profile: profile.id, url: sim.url }, ctx, { modbus: { lines: new LineRegistry() } });
    cleanup.push(() => driver.close());
    const first = await driver.poll!();
    expect(readings(first)).toMatchObject({ sounder: 0, strobe: 0, door_east_open: 1, door_west_open: 0 });
    expect(events(first).map((e) => [e.type, e.data.point])).toEqual([['linkage.door_released', 'door_east_open']]);
    await driver.write('relays', 0b0101);
    expect(sim.requests[15]).toBe(1);
    expect([sim.get('sounder'), sim.get('strobe'), sim.get('door_release_east'), sim.get('door_release_west')]).toEqual([true, false, true, false]);
    await driver.write('door_release_west', true);
    expect(sim.requests[5]).toBe(1);
    expect(sim.get('relays')).toBe(0b1101);
    await expect(driver.write('relays', 256)).rejects.toMatchObject({ code: 'bad_value' });
    await expect(driver.write('door_east_open', true)).rejects.toMatchObject({ code: 'not_writable' });
  });

  it('a delayed answer within the timeout is fine; past it is a timeout', async () => {
    const { sim, driver } = await smokeRig();
    sim.fault('delay', { ms: 50 });
    expect(readings(await driver.poll!()).smoke_density).toBe(0.02);
    expect(driver.health().state).toBe('online');
    sim.fault('delay', { ms: 800 });
    expect(await driver.poll!()).toEqual([]);
    expect(driver.health()).toMatchObject({ state: 'degraded', lastError: expect.stringMatching(/timeout/) });
  });

  it('a Modbus exception shows as degraded health with the exception code; poll never throws', async () => {
    const { sim, driver } = await smokeRig();
    await driver.poll!();
    sim.fault('exception', { code: 2, table: 'holding' });
    const obs = await driver.poll!();
    expect(readings(obs).smoke_density).toBe(0.02); // the other blocks still read
    const h = driver.health();
    expect(h.state).toBe('degraded');
    expect(h.lastError).toMatch(/exception 2 \(illegal data address\) at register 40001/);
    // refusing everything (exception 6, busy) is still an answer: degraded, never offline
    sim.fault('exception', { code: 6 });
    for (let i = 0; i < 4; i++) expect(await driver.poll!()).toEqual([]);
    expect(driver.health()).toMatchObject({ state: 'degraded', lastError: expect.stringMatching(/exception 6 \(server device busy\)/) });
  });

  it('silence makes the device time out, then back off, then go offline; it recovers when it answers again', async () => {
    const clock = skewedClock();
    const { sim, driver } = await smokeRig({}, clock);
    await driver.poll!();
    sim.fault('silence');
    expect(await driver.poll!()).toEqual([]);
    // the request and its one retry (profile retries: 1) both timed out
    expect(driver.health()).toMatchObject({ state: 'degraded', timeouts: 2 });
    await driver.poll!(); // backing off: fails fast, no wire request
    await driver.poll!();
    expect(driver.health().state).toBe('offline');
    expect(driver.health().lastError).toMatch(/not answering/);
    expect(driver.health().timeouts).toBe(2); // backoff kept it off the wire
    sim.fault('none');
    clock.advance(2_500);
    expect(readings(await driver.poll!()).smoke_density).toBe(0.02);
    expect(driver.health()).toMatchObject({ state: 'online', consecutiveFailures: 0 });
  });

  it('reconnects after the device restarts (connection backoff on the injected clock)', async () => {
    const clock = skewedClock();
    const profile = (await getProfile('smoke-photoelectric-generic')) as ModbusProfile;
    let sim = await startModbusSimulator({ profile, initial: { smoke_density: 0.02 } });
    const port = sim.port;
    const driver = await createDriver({ id: 'smoke-r', profile: profile.id, url: `${sim.url}&timeout=300` }, { ...ctx, clock }, { modbus: { lines: new LineRegistry() } });
    cleanup.push(() => driver.close());
    expect(readings(await driver.poll!()).smoke_density).toBe(0.02);
    await sim.close();
    await driver.poll!();
    await driver.poll!();
    expect(driver.health().state).not.toBe('online');
    sim = await startModbusSimulator({ profile, port, initial: { smoke_density: 0.05 } });
    cleanup.push(() => sim.close());
    clock.advance(5_000); // past the reconnect backoff
    expect(readings(await driver.poll!()).smoke_density).toBe(0.05);
    expect(driver.health().state).toBe('online');
  });

  it('a closed port reports connection refused in health, without throwing', async () => {
    const profile = (await getProfile('smoke-photoelectric-generic')) as ModbusProfile;
    const port = await freePort();
    const driver: DeviceDriver = await createDriver({ id: 'smoke-x', profile: profile.id, url: `modbus-tcp://127.0.0.1:${port}?unit=1` }, ctx, { modbus: { lines: new LineRegistry() } });
    cleanup.push(() => driver.close());
    expect(await driver.poll!()).toEqual([]);
    expect(driver.health()).toMatchObject({ state: 'offline', lastError: expect.stringMatching(/connection refused/) });
  });

  it('coalesces the temperature sensor into one input-register read per poll', async () => {
    const profile = (await getProfile('temp-humidity-generic')) as ModbusProfile;
    const sim: ModbusSimulator = await startModbusSimulator({ profile, initial: { temperature: -3.5, humidity: 61.2, sensor_fault: true } });
    cleanup.push(() => sim.close());
    const driver = await createDriver({ id: 'temp-1', profile: profile.id, url: sim.url }, { clock: systemClock, log: createLogger({ write: () => {} }) }, { modbus: { lines: new LineRegistry() } });
    cleanup.push(() => driver.close());
    const obs = await driver.poll!();
    expect(readings(obs)).toEqual({ temperature: -3.5, humidity: 61.2, sensor_fault: 1, over_temperature: 0, temperature_offset: 0 });
    expect(events(obs).map((e) => [e.type, e.priority])).toEqual([['device.fault', 'normal']]);
    expect(sim.requests[4]).toBe(1);
    expect(sim.requests[3]).toBe(1);
  });
});
