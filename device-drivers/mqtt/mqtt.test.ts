import { afterEach, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { connect } from 'node:net';
import { createLogger, systemClock, hashResidentId } from '../../contract/index.ts';
import { createDriver, type Observation } from '../index.ts';
import { startDeviceBroker, type DeviceBroker } from './broker.ts';
import { startGateSimulator, startKioskSimulator } from './simulators.ts';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) {
    const t0 = Date.now();
    await c().catch(() => {});
    if (Date.now() - t0 > 1000) console.log('slow cleanup', c.toString());
  }
});

const PASSWORDS: Record<string, string> = { 'gate-1': 'gate-secret', 'kiosk-1': 'kiosk-secret', 'gate-2': 'other-secret' };
const VALID_ID = '11010519491231002X'; // GB 11643 example number with a valid check character
const logLines: string[] = [];
const log = createLogger({ write: (l) => logLines.push(l), level: 'debug' });

async function rig(): Promise<DeviceBroker> {
  const broker = await startDeviceBroker({ port: 0, authenticate: (u, p) => (PASSWORDS[u] === p ? u : null), log });
  cleanup.push(() => broker.close());
  return broker;
}

function until<T>(fn: () => T | undefined, ms = 3000): Promise<T> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const tick = () => {
      const v = fn();
      if (v !== undefined && v !== false) return resolve(v);
      if (Date.now() - t0 > ms) return reject(new Error('condition not met in time'));
      setTimeout(tick, 10);
    };
    tick();
  });
}

describe('device broker', () => {
  it('refuses wrong passwords, client ids with + or #, and keeps each device to its own topics', async () => {
    const broker = await rig();
    await expect(mqtt.connectAsync(broker.url, { username: 'gate-1', password: 'wrong', reconnectPeriod: 0 })).rejects.toThrow(/Bad username or password|Not authorized/i);
    await expect(mqtt.connectAsync(broker.url, { username: 'gate-1', password: 'gate-secret', clientId: 'gate+1', reconnectPeriod: 0 })).rejects.toThrow(/Identifier rejected/i);
    await expect(mqtt.connectAsync(broker.url, { username: 'gate-1', password: 'gate-secret', clientId: 'a#', reconnectPeriod: 0 })).rejects.toThrow(/Identifier rejected/i);

    const seen: string[] = [];
    broker.handle.onDeviceMessage('gate-2', (t) => seen.push(t));
    const c = await mqtt.connectAsync(broker.url, { username: 'gate-1', password: 'gate-secret', clientId: 'gate-1', reconnectPeriod: 0 });
    cleanup.push(() => c.endAsync(true));
    // subscriptions outside its own cmd topic are refused with SUBACK 0x80
    await expect(c.subscribeAsync('$SYS/#')).rejects.toThrow(/Subscribe error/);
    await expect(c.subscribeAsync('devices/gate-2/#')).rejects.toThrow(/Subscribe error/);
    expect((await c.subscribeAsync('devices/gate-1/cmd')).map((g) => g.qos)).toEqual([0]);
    // publishing under another device's topic closes the connection and delivers nothing
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.publish('devices/gate-2/event', JSON.stringify({ type: 'forced_open' }), { qos: 1 });
    await closed;
    expect(seen).toEqual([]);
  });
});

/** Send a CONNECT by hand and return the CONNACK return code. */
function rawConnackCode(port: number, clientId: string, clean: boolean, username: string, password: string): Promise<number> {
  const str = (v: string) => {
    const b = Buffer.from(v, 'utf8');
    const l = Buffer.alloc(2);
    l.writeUInt16BE(b.length);
    return Buffer.concat([l, b]);
  };
  const body = Buffer.concat([str('MQTT'), Buffer.from([4, 0xc0 | (clean ? 2 : 0), 0, 30]), str(clientId), str(username), str(password)]);
  const packet = Buffer.concat([Buffer.from([0x10, body.length]), body]);
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(packet));
    s.once('data', (d: Buffer) => {
      s.destroy();
      d[0] === 0x20 ? resolve(d[3]!) : reject(new Error(`not a CONNACK: ${d.toString('hex')}`));
    });
    s.once('error', reject);
  });
}

describe('device broker, more refusals', () => {
  it('an empty client id with a persistent session is refused; $SYS cannot be published to', async () => {
    const broker = await rig();
    // MQTT.js will not even send this; speak the protocol directly (MQTT 3.1.1 §3.1, §3.2)
    expect(await rawConnackCode(broker.port, '', false, 'gate-1', 'gate-secret')).toBe(2);
    expect(await rawConnackCode(broker.port, 'gate-1-ok', false, 'gate-1', 'gate-secret')).toBe(0);
    const c = await mqtt.connectAsync(broker.url, { username: 'gate-1', password: 'gate-secret', clientId: 'gate-1-g1', reconnectPeriod: 0 });
    cleanup.push(() => c.endAsync(true));
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.publish('$SYS/broker/uptime', 'forged', { qos: 1 });
    await closed;
    // a device may not publish to its own command topic either (commands come from the gateway)
    const c2 = await mqtt.connectAsync(broker.url, { username: 'gate-1', password: 'gate-secret', clientId: 'gate-1-g2', reconnectPeriod: 0 });
    cleanup.push(() => c2.endAsync(true));
    const closed2 = new Promise<void>((r) => c2.once('close', () => r()));
    c2.publish('devices/gate-1/cmd', '{"action":"unlock"}', { qos: 1 });
    await closed2;
    expect(broker.connectedDevices()).toEqual([]);
  });

  it('a payload over 64 KiB closes the connection and reaches no driver', async () => {
    const broker = await rig();
    const seen: string[] = [];
    broker.handle.onDeviceMessage('gate-1', (t) => seen.push(t));
    const c = await mqtt.connectAsync(broker.url, { username: 'gate-1', password: 'gate-secret', clientId: 'gate-1-g3', reconnectPeriod: 0 });
    cleanup.push(() => c.endAsync(true));
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.publish('devices/gate-1/state', Buffer.alloc(70 * 1024, 0x20), { qos: 1 });
    await closed;
    expect(seen).toEqual([]);
  });
});

describe('MQTT gate', () => {
  it('a device that stops publishing goes offline after three of its intervals', async () => {
    const broker = await rig();
    let skew = 0;
    const clock = { ...systemClock, now: () => Date.now() + skew };
    const driver = await createDriver({ id: 'gate-1', profile: 'gate-controller-generic', url: 'mqtt://gate-1', intervalMs: 1000 }, { clock, log, deviceBroker: broker.handle });
    cleanup.push(() => driver.close());
    await driver.subscribe!(() => {});
    expect(driver.health().state).toBe('offline'); // never heard from
    const gate = await startGateSimulator({ brokerUrl: broker.url, deviceId: 'gate-1', username: 'gate-1', password: 'gate-secret', heartbeatMs: 0 });
    cleanup.push(() => gate.close());
    await until(() => driver.health().state === 'online');
    skew = 2500;
    expect(driver.health().state).toBe('online');
    skew = 3500;
    expect(driver.health()).toMatchObject({ state: 'offline', lastError: expect.stringMatching(/no message for 3 s/) });
    await gate.setDoor(true);
    await until(() => driver.health().state === 'online');
  });

  it('maps state and forced-open events, and an unlock write reaches the gate', async () => {
    const broker = await rig();
    const driver = await createDriver({ id: 'gate-1', profile: 'gate-controller-generic', url: 'mqtt://gate-1' }, { clock: systemClock, log, deviceBroker: broker.handle });
    cleanup.push(() => driver.close());
    const obs: Observation[] = [];
    await driver.subscribe!((o) => obs.push(o));
    const gate = await startGateSimulator({ brokerUrl: broker.url, deviceId: 'gate-1', username: 'gate-1', password: 'gate-secret', heartbeatMs: 0 });
    cleanup.push(() => gate.close());
    await until(() => obs.some((o) => o.kind === 'reading' && o.metric === 'door_open'));
    expect(obs).toContainEqual(expect.objectContaining({ kind: 'reading', metric: 'locked', value: 1 }));

    await gate.forcedOpen();
    const forced = await until(() => obs.find((o) => o.kind === 'event' && o.type === 'gate.forced_open'));
    expect(forced).toMatchObject({ priority: 'alarm', data: { door: 'main' } });
    await gate.passage('in');
    const passage = await until(() => obs.find((o) => o.kind === 'event' && o.type === 'gate.passage'));
    expect(passage).toMatchObject({ priority: 'normal', data: { direction: 'in' } });
    expect(JSON.stringify(passage)).not.toContain('sim-card'); // the card number is not passed on

    await driver.write('unlock', 3);
    await until(() => gate.commands.length > 0);
    expect(gate.commands[0]).toMatchObject({ action: 'unlock', seconds: 3 });
    expect(driver.health().state).toBe('online');
    await expect(driver.write('lock_forever', 1)).rejects.toMatchObject({ code: 'not_writable' });
  });

  it('a payload that is not JSON is counted and logged without its content; the driver goes on', async () => {
    const broker = await rig();
    const driver = await createDriver({ id: 'gate-1', profile: 'gate-controller-generic', url: 'mqtt://gate-1' }, { clock: systemClock, log, deviceBroker: broker.handle });
    cleanup.push(() => driver.close());
    const obs: Observation[] = [];
    await driver.subscribe!((o) => obs.push(o));
    const gate = await startGateSimulator({ brokerUrl: broker.url, deviceId: 'gate-1', username: 'gate-1', password: 'gate-secret', heartbeatMs: 0 });
    cleanup.push(() => gate.close());
    await gate.publishRaw('event', '<<not json>>');
    await until(() => driver.health().errors === 1);
    expect(driver.health().state).toBe('degraded');
    await gate.forcedOpen();
    await until(() => obs.find((o) => o.kind === 'event' && o.type === 'gate.forced_open'));
    expect(logLines.join('\n')).not.toContain('<<not json>>');
  });
});

describe('MQTT kiosk', () => {
  it('passes on only the masked ID and its keyed hash; a bad check character is refused without the number', async () => {
    logLines.length = 0;
    const broker = await rig();
    const driver = await createDriver({ id: 'kiosk-1', profile: 'visitor-kiosk-generic', url: 'mqtt://kiosk-1' }, { clock: systemClock, log, deviceBroker: broker.handle, idHashKey: 'test-key' });
    cleanup.push(() => driver.close());
    const obs: Observation[] = [];
    await driver.subscribe!((o) => obs.push(o));
    const kiosk = await startKioskSimulator({ brokerUrl: broker.url, deviceId: 'kiosk-1', username: 'kiosk-1', password: 'kiosk-secret', heartbeatMs: 0 });
    cleanup.push(() => kiosk.close());

    await kiosk.checkIn({ name: '王小明', idNumber: VALID_ID, host: '李老师', purpose: '家长会' });
    const checkin = await until(() => obs.find((o) => o.kind === 'event' && o.type === 'visitor.checkin'));
    expect(checkin).toMatchObject({
      priority: 'normal',
      data: { visitor: '王**', idMasked: '110105********002X', idHash: hashResidentId(VALID_ID, 'test-key'), host: '李老师', purpose: '家长会' },
    });
    await kiosk.watchlistHit({ name: '王小明', idNumber: VALID_ID });
    await until(() => obs.find((o) => o.kind === 'event' && o.type === 'visitor.watchlist' && o.priority === 'alarm'));

    const wrong = VALID_ID.slice(0, 17) + '5';
    await kiosk.checkIn({ name: '赵六', idNumber: wrong });
    const invalid = await until(() => obs.find((o) => o.kind === 'event' && o.type === 'visitor.id_invalid'));
    expect(invalid).toMatchObject({ data: { field: 'idNumber', reason: expect.stringMatching(/check character/) } });
    expect(obs.filter((o) => o.kind === 'event' && o.type === 'visitor.checkin')).toHaveLength(1);

    const everything = JSON.stringify(obs) + logLines.join('\n');
    for (const clear of [VALID_ID, wrong, '王小明', '赵六']) expect(everything).not.toContain(clear);
  });
});

describe('device broker in custody mode (the gateway)', () => {
  it('acknowledges a QoS 1 or 2 message only once a listener kept it, hands it over once, and quarantines what cannot be read', async () => {
    let failures = 0;
    let failNext = false;
    const unreadable: string[] = [];
    const broker = await startDeviceBroker({
      port: 0,
      authenticate: (u, p) => (PASSWORDS[u] === p ? u : null),
      log,
      listen: false,
      custodyFailures: () => failures,
      onUnreadable: (device, topic, reason) => (unreadable.push(`${device} ${topic} ${reason}`), true),
    });
    cleanup.push(() => broker.close());
    // not listening until told: the drivers register first
    expect(broker.port).toBe(0);
    await broker.listen();
    const kept: string[] = [];
    const connectGate = () => mqtt.connectAsync(broker.url, { username: 'gate-1', password: 'gate-secret', clientId: `gate-1-${Math.random().toString(16).slice(2)}`, reconnectPeriod: 0 });

    // no listener for the device yet: no PUBACK, the connection closes
    const c1 = await connectGate();
    cleanup.push(() => c1.endAsync(true));
    const closed1 = new Promise<void>((r) => c1.once('close', () => r()));
    let acked1 = false;
    c1.publish('devices/gate-1/state', '{"n":1}', { qos: 1 }, (e) => (acked1 = !e));
    await closed1;
    expect(acked1).toBe(false);

    const off = broker.handle.onDeviceMessage('gate-1', (topic, payload) => {
      if (payload.toString() === 'not json') throw new Error('payload on state is not JSON');
      if (failNext) {
        failNext = false;
        failures++; // the buffer could not take it
        return;
      }
      kept.push(`${topic} ${payload.toString()}`);
    });
    const c2 = await connectGate();
    cleanup.push(() => c2.endAsync(true));
    await c2.publishAsync('devices/gate-1/state', '{"n":2}', { qos: 1 });
    await c2.publishAsync('devices/gate-1/state', '{"n":3}', { qos: 2 });
    expect(kept).toEqual(['devices/gate-1/state {"n":2}', 'devices/gate-1/state {"n":3}']);
    // unreadable: set aside, then acknowledged
    await c2.publishAsync('devices/gate-1/state', 'not json', { qos: 1 });
    expect(unreadable).toEqual(['gate-1 devices/gate-1/state payload on state is not JSON']);
    // the buffer failed: refused, the connection closes
    failNext = true;
    const closed2 = new Promise<void>((r) => c2.once('close', () => r()));
    let acked2 = false;
    c2.publish('devices/gate-1/state', '{"n":4}', { qos: 2 }, (e) => (acked2 = !e));
    await closed2;
    expect(acked2).toBe(false);
    expect(kept).toHaveLength(2);
    off();
  });
});
