import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  buildTopic, eventBatchSchema, gatewayStatusSchema, parsePayload, readingBatchSchema, silentLogger, commandResultSchema,
  type DeviceEvent, type Reading,
} from '../contract/index.ts';
import { createGateway, openRegistry, parseEdgeConfig, type Gateway } from './index.ts';
import {
  createManualClock, scriptedKit, scriptedProfile, startMosquitto, startReceiptResponder,
  type ManualClock, type MosquittoHandle, type ReceiptResponder, type ScriptedDevice,
} from './testing.ts';

const COUNTY = '370102';
const SITE = '37/3701/370102/3737000001';
let broker: MosquittoHandle;
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'xiaoan-gw-'));
  dirs.push(d);
  return d;
};
beforeAll(async () => {
  broker = await startMosquitto(tmp());
});
afterAll(async () => {
  await broker.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Collected { readings: Reading[]; events: DeviceEvent[]; status: unknown[]; results: unknown[]; order: string[]; floors: Array<number | undefined> }
async function subscriber(gatewayId: string): Promise<{ client: MqttClient; got: Collected }> {
  const got: Collected = { readings: [], events: [], status: [], results: [], order: [], floors: [] };
  const client = await mqtt.connectAsync(broker.url, { clientId: `sub-${gatewayId}-${Math.random().toString(16).slice(2)}`, clean: true });
  const base = buildTopic({ county: COUNTY, gatewayId, channel: 'readings' }).replace(/\/readings$/, '');
  client.on('message', (topic, payload) => {
    const ch = topic.slice(base.length + 1);
    got.order.push(ch);
    if (ch === 'readings') { const r = parsePayload(readingBatchSchema, payload); if (!r.ok) throw new Error(r.error); got.readings.push(...r.value.readings); got.floors.push(r.value.floor); }
    if (ch === 'events') { const r = parsePayload(eventBatchSchema, payload); if (!r.ok) throw new Error(r.error); got.events.push(...r.value.events); got.floors.push(r.value.floor); }
    if (ch === 'status') { const r = parsePayload(gatewayStatusSchema, payload); if (!r.ok) throw new Error(r.error); got.status.push(r.value); }
    if (ch === 'cmd-result') { const r = parsePayload(commandResultSchema, payload); if (!r.ok) throw new Error(r.error); got.results.push(r.value); }
  });
  await client.subscribeAsync(`${base}/#`, { qos: 1 });
  return { client, got };
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const profiles = [
  scriptedProfile('temp-test', { interval: 5000, deadband: { temperature: 0.5 }, integrity: 60_000 }),
  scriptedProfile('gate-test', { interval: 30_000, integrity: 300_000 }, 'mqtt'),
];

let n = 0;
async function makeGateway(devices: Record<string, ScriptedDevice>, over: Record<string, unknown> = {}) {
  const clock: ManualClock = createManualClock();
  const gatewayId = `gw-test-${++n}-${process.pid}`;
  const cfg = parseEdgeConfig({
    gatewayId, county: COUNTY, site: SITE,
    uplink: { url: broker.url, password: 'x', reconnectMs: 200 },
    dataDir: tmp(),
    http: { port: 0 },
    deviceBroker: { port: 0 },
    devices: [],
    ...over,
  });
  const gw = await createGateway(cfg, { clock, log: silentLogger, drivers: scriptedKit(profiles, devices, clock), random: () => 0.5 });
  const centre = await centreFor(gatewayId);
  return { gw, clock, gatewayId, centre };
}

/** the stand-in centre: receipts what it receives of one gateway (no ingest worker runs here) */
async function centreFor(gatewayId: string): Promise<ReceiptResponder> {
  const centre = await startReceiptResponder(broker.url, { filter: `xiaoan/v1/+/+/+/${gatewayId}` });
  centres.push(centre);
  return centre;
}
const centres: ReceiptResponder[] = [];

const gateways: Gateway[] = [];
const clients: MqttClient[] = [];
afterEach(async () => {
  for (const g of gateways.splice(0)) await g.stop();
  for (const c of clients.splice(0)) await c.endAsync();
  for (const c of centres.splice(0)) await c.close();
});

describe('gateway', () => {
  it('polls on schedule, applies the deadband and integrity report, and forwards with seq over QoS 1', async () => {
    const temps = [20, 20.1, 20.2, 21, 21.1];
    const dev: ScriptedDevice = { writes: [], poll: (i, now) => [{ kind: 'reading', metric: 'temperature', value: temps[Math.min(i, temps.length - 1)]!, ts: now, quality: 'good' }] };
    const { gw, clock, gatewayId } = await makeGateway({ 'temp-1': dev }, { devices: [{ id: 'temp-1', profile: 'temp-test', url: 'modbus-tcp://127.0.0.1:1502?unit=1' }] });
    gateways.push(gw);
    const { client, got } = await subscriber(gatewayId);
    clients.push(client);
    await gw.start();
    await until(() => gw.status().uplink?.state === 'connected', 'uplink');
    // jitter source 0.5: first poll at half an interval, then every interval exactly
    await clock.advance(2500 + 4 * 5000);
    await until(() => got.readings.length >= 2, 'readings');
    // 20 sent, 20.1 and 20.2 inside the 0.5 deadband, 21 sent, 21.1 inside
    expect(got.readings.map((r) => r.value)).toEqual([20, 21]);
    expect(got.readings.map((r) => r.seq)).toEqual([1, 2]);
    expect(got.readings[0]).toMatchObject({ device: 'temp-1', metric: 'temperature', quality: 'good' });
    await until(() => gw.status().buffer.depth === 0, 'the first two receipted');
    // integrity: after 60 s the unchanged value is sent again
    await clock.advance(60_000);
    await until(() => got.readings.length >= 3, 'integrity report');
    expect(got.readings[2]!.value).toBe(21.1);
    await until(() => gw.status().buffer.depth === 0, 'buffer drained on receipts');
    expect(gw.status().buffer.acked).toBe(3);
    expect(gw.status().uplink).toMatchObject({ receipts: 3, recordsConfirmed: 3, awaitingReceipt: 0, resends: 0 });
    // each batch carried the lowest seq still buffered
    expect(got.floors[0]).toBe(1);
    expect(got.floors[2]).toBe(3);
    // retained birth lists the device with its expected interval
    const birth = got.status.find((s) => (s as { state: string }).state === 'online') as { devices: Array<{ id: string; expectedIntervalMs: number }> };
    expect(birth.devices).toEqual([expect.objectContaining({ id: 'temp-1', expectedIntervalMs: 60_000, state: 'online' })]);
    const metrics = gw.metrics();
    expect(metrics).toMatch(new RegExp(`xiaoan_edge_uplink_up\\{gateway="${gatewayId}"\\} 1`));
    expect(metrics).toMatch(/xiaoan_edge_readings_suppressed_total\{gateway="[^"]+",device="temp-1"\} 14/);
  });

  it('publishes device health changes as events and alarms from push devices', async () => {
    const t: ScriptedDevice = { writes: [], poll: (_i, now) => [{ kind: 'reading', metric: 'temperature', value: 20, ts: now, quality: 'good' }] };
    const gate: ScriptedDevice = { writes: [], push: true };
    const { gw, clock, gatewayId } = await makeGateway({ 'temp-1': t, 'gate-1': gate }, {
      devices: [
        { id: 'temp-1', profile: 'temp-test', url: 'modbus-tcp://127.0.0.1:1502?unit=1' },
        { id: 'gate-1', profile: 'gate-test', url: 'mqtt://gate-1', password: 'gate-secret-1' },
      ],
    });
    gateways.push(gw);
    const { client, got } = await subscriber(gatewayId);
    clients.push(client);
    await gw.start();
    await clock.advance(3000);
    t.failing = true;
    await clock.advance(15_000);
    t.failing = false;
    await clock.advance(5000);
    gate.pushFn!({ kind: 'event', type: 'gate.forced_open', ts: clock.now(), priority: 'alarm', data: { door: 'east' } });
    await until(() => got.events.some((e) => e.type === 'gate.forced_open') && got.events.filter((e) => e.type.startsWith('device.')).length >= 3, 'events');
    expect(got.events.filter((e) => e.device === 'temp-1').map((e) => e.type)).toEqual(['device.degraded', 'device.offline', 'device.online']);
    expect(got.events.find((e) => e.type === 'gate.forced_open')).toMatchObject({ priority: 'alarm', device: 'gate-1', data: { door: 'east' } });
    expect(gw.registry.verifyPassword('gate-1', 'gate-secret-1')).toBe(true);
    expect(gw.registry.verifyPassword('gate-1', 'wrong-password')).toBe(false);
  });

  it('sends new alarms ahead of a backlog that replays at a bounded rate', async () => {
    const { gw, clock, gatewayId } = await makeGateway({}, { uplink: { url: broker.url, password: 'x', batchSize: 500, inflight: 2 }, buffer: { replayPerSecond: 1000 } });
    gateways.push(gw);
    const { client, got } = await subscriber(gatewayId);
    clients.push(client);
    // a backlog of 5000 readings written before the uplink exists
    for (let i = 0; i < 10; i++) gw.inject(Array.from({ length: 500 }, (_, k) => ({ kind: 'reading' as const, device: 'temp-1', metric: 'temperature', ts: clock.now(), value: i * 500 + k, quality: 'good' as const })));
    await gw.start();
    await until(() => got.readings.length >= 1000, 'first second of backlog');
    // the rate holds: without the clock moving, nothing more than one second's worth is sent
    await new Promise((r) => setTimeout(r, 300));
    expect(got.readings.length).toBe(1000);
    gw.inject([{ kind: 'event', device: 'smoke-1', type: 'smoke.alarm', ts: clock.now(), priority: 'alarm', data: {} }]);
    await until(() => got.events.length === 1, 'alarm');
    expect(got.readings.length).toBe(1000);
    for (let s = 2; s <= 5; s++) {
      await clock.advance(1000);
      await until(() => got.readings.length >= s * 1000, `second ${s}`);
      await new Promise((r) => setTimeout(r, 100));
      expect(got.readings.length).toBe(s * 1000);
    }
    expect(got.readings.map((r) => r.value)).toEqual(Array.from({ length: 5000 }, (_, i) => i));
    expect(got.events[0]!.seq).toBe(5001);
  });

  it('answers downlink commands, refuses stale, replayed and disallowed ones, and audits each', async () => {
    const gate: ScriptedDevice = { writes: [], push: true };
    const { gw, clock, gatewayId } = await makeGateway({ 'gate-1': gate }, {
      devices: [{ id: 'gate-1', profile: 'gate-test', url: 'mqtt://gate-1', password: 'gate-secret-1' }],
      commands: { allow: ['device.write', 'rebirth'] },
    });
    gateways.push(gw);
    const { client, got } = await subscriber(gatewayId);
    clients.push(client);
    await gw.start();
    await until(() => gw.status().uplink?.state === 'connected', 'uplink');
    await new Promise((r) => setTimeout(r, 200)); // command subscription in place
    const cmd = (kind: string) => buildTopic({ county: COUNTY, gatewayId, channel: 'cmd', sub: kind });
    const base = { v: 1, issuedBy: 'desk@37/3701/370102/3737000001', issuedAt: clock.now() };
    await client.publishAsync(cmd('device.write'), JSON.stringify({ ...base, id: 'c1', kind: 'device.write', device: 'gate-1', point: 'release', value: 'fire' }), { qos: 1 });
    await client.publishAsync(cmd('device.write'), JSON.stringify({ ...base, id: 'c1', kind: 'device.write', device: 'gate-1', point: 'release', value: 'fire' }), { qos: 1 });
    await client.publishAsync(cmd('device.write'), JSON.stringify({ ...base, id: 'c2', kind: 'device.write', device: 'gate-1', point: 'release', value: 'x', issuedAt: clock.now() - 3_600_000 }), { qos: 1 });
    await client.publishAsync(cmd('device.upsert'), JSON.stringify({ ...base, id: 'c3', kind: 'device.upsert', device: { id: 'x' } }), { qos: 1 });
    await client.publishAsync(cmd('rebirth'), JSON.stringify({ ...base, id: 'c4', kind: 'device.write', device: 'gate-1', point: 'unlock', value: 5 }), { qos: 1 });
    await client.publishAsync(cmd('device.write'), '{not json', { qos: 1 });
    await client.publishAsync(cmd('device.write'), JSON.stringify({ ...base, id: 'c5', kind: 'device.write', device: 'nope', point: 'unlock', value: 5 }), { qos: 1 });
    await until(() => got.results.length >= 6, 'results');
    const byId = (id: string) => got.results.filter((r) => (r as { id: string }).id === id) as Array<{ ok: boolean; message: string }>;
    expect(gate.writes).toEqual([{ point: 'release', value: 'fire' }]);
    expect(byId('c1').map((r) => r.ok)).toEqual([true, false]);
    expect(byId('c1')[1]!.message).toMatch(/already handled/);
    expect(byId('c2')[0]).toMatchObject({ ok: false, message: expect.stringMatching(/stale/) });
    expect(byId('c3')[0]).toMatchObject({ ok: false, message: expect.stringMatching(/does not accept device.upsert/) });
    expect(byId('c4')[0]).toMatchObject({ ok: false, message: expect.stringMatching(/kind/) });
    expect(byId('c5')[0]).toMatchObject({ ok: false, message: expect.stringMatching(/not enrolled/) });
    const audit = gw.registry.auditLog();
    expect(audit).toHaveLength(7);
    expect(audit.find((a) => a.id === 'c1' && a.ok)).toMatchObject({ kind: 'device.write', issuedBy: base.issuedBy, detail: { device: 'gate-1', point: 'release', value: 'fire' } });
    expect(gw.metrics()).toMatch(/xiaoan_edge_commands_total\{gateway="[^"]+",kind="device.write",outcome="accepted"\} 1/);
  });
});

describe('registry file', () => {
  it('picks up devices the CLI adds to or removes from the registry file while the gateway runs', async () => {
    const dev: ScriptedDevice = { writes: [], poll: (_i, now) => [{ kind: 'reading', metric: 'temperature', value: 18, ts: now, quality: 'good' }] };
    const { gw, clock } = await makeGateway({ 'temp-5': dev });
    gateways.push(gw);
    await gw.start();
    const cli = openRegistry(join(gw.config.dataDir, 'registry.sqlite'));
    cli.upsert({ id: 'temp-5', profile: 'temp-test', url: 'modbus-tcp://10.0.0.5:502?unit=1' }, 'cli');
    expect(gw.runner('temp-5')).toBeUndefined();
    await clock.advance(2000);
    await until(() => gw.runner('temp-5') !== undefined, 'runner for the new device');
    cli.remove('temp-5');
    cli.close();
    await clock.advance(2000);
    await until(() => gw.runner('temp-5') === undefined, 'runner stopped');
  });
});

describe('configuration commands', () => {
  it('adds a device on device.upsert (validated, password never audited) and re-publishes the birth on rebirth', async () => {
    const t: ScriptedDevice = { writes: [], poll: (_i, now) => [{ kind: 'reading', metric: 'temperature', value: 19, ts: now, quality: 'good' }] };
    const { gw, clock, gatewayId } = await makeGateway({ 'temp-9': t });
    gateways.push(gw);
    const { client, got } = await subscriber(gatewayId);
    clients.push(client);
    await gw.start();
    await until(() => gw.status().uplink?.state === 'connected', 'uplink');
    await new Promise((r) => setTimeout(r, 200));
    const cmd = (kind: string) => buildTopic({ county: COUNTY, gatewayId, channel: 'cmd', sub: kind });
    const base = { v: 1, issuedBy: 'tech@37/3701/370102/3737000001', issuedAt: clock.now() };
    await client.publishAsync(cmd('device.upsert'), JSON.stringify({ ...base, id: 'u1', kind: 'device.upsert', device: { id: 'temp-9', profile: 'temp-test', url: 'modbus-tcp://10.0.0.9:502?unit=1', name: '库房' } }), { qos: 1 });
    await client.publishAsync(cmd('device.upsert'), JSON.stringify({ ...base, id: 'u2', kind: 'device.upsert', device: { id: 'gate-9', profile: 'gate-test', url: 'mqtt://gate-9', password: 'short' } }), { qos: 1 });
    await until(() => got.results.length >= 2, 'results');
    expect(got.results.find((r) => (r as { id: string }).id === 'u1')).toMatchObject({ ok: true });
    expect(got.results.find((r) => (r as { id: string }).id === 'u2')).toMatchObject({ ok: false, message: expect.stringMatching(/password/) });
    expect(gw.registry.get('temp-9')).toMatchObject({ name: '库房', source: `command:${base.issuedBy}` });
    expect(gw.registry.get('gate-9')).toBeUndefined();
    expect(JSON.stringify(gw.registry.auditLog())).not.toContain('short');
    await clock.advance(6000);
    await until(() => got.readings.some((r) => r.device === 'temp-9'), 'the new device polled');
    const births = () => got.status.filter((s) => (s as { state: string }).state === 'online').length;
    const before = births();
    await client.publishAsync(cmd('rebirth'), JSON.stringify({ ...base, id: 'r1', kind: 'rebirth' }), { qos: 1 });
    await until(() => births() > before && got.results.some((r) => (r as { id: string }).id === 'r1'), 'rebirth');
    const last = got.status.at(-1) as { devices: Array<{ id: string }> };
    expect(last.devices.map((d) => d.id)).toEqual(['temp-9']);
  });
});

describe('device commands: remove, test, discover', () => {
  it('tests enrolled and unsaved devices (no secret in the answer or audit), discovers cameras and Modbus units, removes devices', async () => {
    const { getProfile, startModbusSimulator, startOnvifSimulator, discoverOnvif, discoverModbusUnits } = await import('../device-drivers/index.ts');
    const sim = await startModbusSimulator({ profile: (await getProfile('temp-humidity-generic')) as never, host: '127.0.0.1' });
    const cam = await startOnvifSimulator({ host: '127.0.0.1', port: 0, discoveryPort: 0 });
    try {
      const t: ScriptedDevice = { writes: [], poll: (_i, now) => [{ kind: 'reading', metric: 'temperature', value: 21.5, ts: now, quality: 'good' }] };
      const clock: ManualClock = createManualClock();
      const gatewayId = `gw-test-${++n}-${process.pid}`;
      const cfg = parseEdgeConfig({
        gatewayId, county: COUNTY, site: SITE,
        uplink: { url: broker.url, password: 'x', reconnectMs: 200 },
        dataDir: tmp(), http: { port: 0 }, deviceBroker: { port: 0 },
        devices: [{ id: 'temp-1', profile: 'temp-test', url: 'modbus-tcp://127.0.0.1:1502?unit=1' }],
      });
      const base = scriptedKit([...profiles, scriptedProfile('cam-test', {}, 'onvif')], { 'temp-1': t }, clock);
      const kit = {
        ...base,
        // a camera that cannot be reached, whose error names its url with the password (as real drivers may)
        createDriver: async (spec: Parameters<typeof base.createDriver>[0], ctx: Parameters<typeof base.createDriver>[1]) => {
          if (spec.id === 'cam-9') throw Object.assign(new Error(`connect ECONNREFUSED ${spec.url}`), { code: 'connection_refused' });
          return base.createDriver(spec, ctx);
        },
        discoverOnvif: discoverOnvif as never,
        discoverModbusUnits,
      };
      const gw = await createGateway(cfg, { clock, log: silentLogger, drivers: kit, random: () => 0.5 });
      gateways.push(gw);
      const { client, got } = await subscriber(gatewayId);
      clients.push(client);
      await gw.start();
      await until(() => gw.status().uplink?.state === 'connected', 'uplink');
      await clock.advance(3000);
      await new Promise((r) => setTimeout(r, 200));
      const cmd = (kind: string) => buildTopic({ county: COUNTY, gatewayId, channel: 'cmd', sub: kind });
      const head = { v: 1, issuedBy: 'tech@37/3701/370102/3737000001', issuedAt: clock.now() };
      const result = (id: string) => got.results.find((r) => (r as { id: string }).id === id) as { ok: boolean; message: string; data?: any } | undefined;
      const send = async (id: string, kind: string, body: Record<string, unknown>) => {
        await client.publishAsync(cmd(kind), JSON.stringify({ ...head, id, kind, ...body }), { qos: 1 });
        await until(() => result(id) !== undefined, `result of ${id}`);
        return result(id)!;
      };

      const t1 = await send('t1', 'device.test', { device: 'temp-1' });
      expect(t1).toMatchObject({ ok: true, data: { device: 'temp-1', ok: true, health: { state: 'online' } } });
      expect(t1.data.observations).toContainEqual(expect.objectContaining({ kind: 'reading', metric: 'temperature', value: 21.5 }));

      const secret = 'S3cret-Camera-pw';
      const t2 = await send('t2', 'device.test', { spec: { id: 'cam-9', profile: 'cam-test', url: `onvif://admin:${secret}@127.0.0.1:9` } });
      expect(t2).toMatchObject({ ok: false, data: { device: 'cam-9', ok: false } });
      expect(t2.message).toMatch(/ECONNREFUSED onvif:\/\/admin:\*\*\*@127\.0\.0\.1:9/);
      expect(JSON.stringify(t2)).not.toContain(secret);
      expect(gw.registry.get('cam-9')).toBeUndefined();

      const t3 = await send('t3', 'device.test', { device: 'nope-1' });
      expect(t3).toMatchObject({ ok: false, message: expect.stringMatching(/not enrolled/) });
      const t4 = await send('t4', 'device.test', { device: 'temp-1', spec: { id: 'x' } });
      expect(t4).toMatchObject({ ok: false, message: expect.stringMatching(/exactly one of device/) });

      const d1 = await send('d1', 'device.discover', { protocol: 'onvif', target: `127.0.0.1:${cam.discoveryPort}`, timeoutMs: 1000 });
      expect(d1).toMatchObject({ ok: true, data: { protocol: 'onvif' } });
      expect(d1.data.found).toEqual([expect.objectContaining({ url: `onvif://127.0.0.1:${cam.port}`, enrolled: false })]);

      const d2 = await send('d2', 'device.discover', { protocol: 'modbus', target: sim.url.replace(/[?&]unit=\d+/, ''), units: [1], timeoutMs: 2000 });
      expect(d2).toMatchObject({ ok: true, data: { protocol: 'modbus', asked: 1 } });
      expect(d2.data.found).toEqual([expect.objectContaining({ unit: 1, answer: expect.stringMatching(/answered|exception/) })]);
      const d3 = await send('d3', 'device.discover', { protocol: 'modbus' });
      expect(d3).toMatchObject({ ok: false, message: expect.stringMatching(/target/) });

      expect(gw.runner('temp-1')).toBeDefined();
      const r1 = await send('r1', 'device.remove', { device: 'temp-1' });
      expect(r1).toMatchObject({ ok: true, message: expect.stringMatching(/removed temp-1/) });
      expect(gw.registry.get('temp-1')).toBeUndefined();
      expect(gw.runner('temp-1')).toBeUndefined();
      const r2 = await send('r2', 'device.remove', { device: 'temp-1' });
      expect(r2).toMatchObject({ ok: false, message: expect.stringMatching(/not enrolled/) });

      // every one audited, none with the camera's password
      const audit = gw.registry.auditLog();
      for (const id of ['t1', 't2', 't3', 't4', 'd1', 'd2', 'd3', 'r1', 'r2']) expect(audit.map((a) => a.id)).toContain(id);
      expect(JSON.stringify(audit)).not.toContain(secret);
      expect(audit.find((a) => a.id === 't2')).toMatchObject({ ok: false });
      expect(gw.metrics()).toMatch(/xiaoan_edge_commands_total\{gateway="[^"]+",kind="device.remove",outcome="accepted"\} 1/);
    } finally {
      await sim.close();
      await cam.close();
    }
  }, 30_000);

  it('refuses the new kinds when commands.allow leaves them out', async () => {
    const { gw, clock, gatewayId } = await makeGateway({}, { commands: { allow: ['device.write'] } });
    gateways.push(gw);
    const { client, got } = await subscriber(gatewayId);
    clients.push(client);
    await gw.start();
    await until(() => gw.status().uplink?.state === 'connected', 'uplink');
    await new Promise((r) => setTimeout(r, 200));
    const head = { v: 1, issuedBy: 'tech', issuedAt: clock.now() };
    await client.publishAsync(buildTopic({ county: COUNTY, gatewayId, channel: 'cmd', sub: 'device.remove' }), JSON.stringify({ ...head, id: 'x1', kind: 'device.remove', device: 'a' }), { qos: 1 });
    await until(() => got.results.length >= 1, 'result');
    expect(got.results[0]).toMatchObject({ id: 'x1', ok: false, message: expect.stringMatching(/does not accept device.remove/) });
  });
});

describe('buffer cap', () => {
  it('reports every drop in gateway.buffer_dropped events, never dropping the reports', async () => {
    const { gw, clock } = await makeGateway({}, { uplink: { url: 'mqtt://127.0.0.1:9', password: 'x', reconnectMs: 60_000 }, buffer: { maxRecords: 100 } });
    gateways.push(gw);
    await gw.start();
    for (let i = 0; i < 300; i++) {
      gw.inject([{ kind: 'reading', device: 'temp-1', metric: 'temperature', ts: clock.now(), value: i, quality: 'good' }]);
      if (i === 150) gw.inject([{ kind: 'event', device: 'smoke-1', type: 'smoke.alarm', ts: clock.now(), priority: 'alarm', data: {} }]);
    }
    await clock.advance(61_000);
    const st = gw.status().buffer;
    const dir = gw.config.dataDir;
    await gw.stop();
    const { openSqliteBuffer } = await import('./buffer.ts');
    const b = openSqliteBuffer({ file: join(dir, 'buffer.sqlite'), maxRecords: 100, clock });
    const batch = b.takeRoutine(0, 1000)!;
    const alarms = b.takeAlarms(0, 10);
    b.close();
    const reports = batch.events.filter((e) => e.type === 'gateway.buffer_dropped');
    const kept = batch.readings.map((r) => r.value);
    expect(alarms).toHaveLength(1);
    expect(reports.reduce((s, e) => s + Number(e.data.dropped), 0)).toBe(st.dropped);
    expect(300 - kept.length).toBe(st.dropped);
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, i) => 300 - kept.length + i));
  });
});

describe('custody: receipts, not PUBACKs', () => {
  const readings = (clock: ManualClock, from: number, n: number) =>
    Array.from({ length: n }, (_, k) => ({ kind: 'reading' as const, device: 'temp-1', metric: 'temperature', ts: clock.now(), value: from + k, quality: 'good' as const }));

  it('keeps records the broker acknowledged but the centre never receipted, sends them again after the timeout, and lets go on receipt', async () => {
    const { gw, clock, gatewayId, centre } = await makeGateway({}, { uplink: { url: broker.url, password: 'x', reconnectMs: 200, receiptTimeoutMs: 30_000 } });
    gateways.push(gw);
    centre.receipting = false;
    await gw.start();
    await until(() => gw.status().uplink?.state === 'connected', 'uplink');
    await new Promise((r) => setTimeout(r, 200)); // receipt subscription in place
    gw.inject(readings(clock, 0, 5));
    gw.inject([{ kind: 'event', device: 'smoke-1', type: 'smoke.alarm', ts: clock.now(), priority: 'alarm', data: {} }]);
    await until(() => (centre.received.get(gatewayId)?.size ?? 0) === 6 && gw.status().uplink!.inflightBatches === 0, 'both batches PUBACKed');
    // PUBACKed, but no receipt: everything stays buffered
    expect(gw.status().buffer.depth).toBe(6);
    expect(gw.status().uplink).toMatchObject({ awaitingReceipt: 2, recordsConfirmed: 0 });
    const first = centre.batches.get(gatewayId)!;
    // a receipt that is not valid (another gateway's, or not a receipt) is ignored
    const receiptTopic = buildTopic({ county: COUNTY, gatewayId, channel: 'receipt' });
    await centre.client.publishAsync(receiptTopic, JSON.stringify({ v: 1, gateway: 'gw-other', ts: clock.now(), seqs: [[1, 6]] }), { qos: 1 });
    await centre.client.publishAsync(receiptTopic, '{"v":1,"seqs":"all"}', { qos: 1 });
    await until(() => gw.status().uplink!.badReceipts === 2, 'bad receipts counted');
    expect(gw.status().buffer.depth).toBe(6);
    // half the timeout: the alarm goes out again alone; the whole timeout: the backlog (and the alarm once more)
    await clock.advance(15_000);
    await until(() => gw.status().uplink!.resends === 1, 'alarm resent');
    await clock.advance(15_000);
    await until(() => centre.batches.get(gatewayId)! >= 2 * first, 'resent');
    await until(() => gw.status().uplink!.resends === 3, 'backlog resent');
    expect(gw.status().uplink!.oldestUnconfirmedMs).toBe(30_000);
    expect(gw.metrics()).toMatch(/xiaoan_edge_uplink_resends_total\{gateway="[^"]+"\} 3/);
    expect(gw.status().buffer.depth).toBe(6);
    // the centre stores and receipts: the buffer lets go of exactly what it named
    centre.receipting = true;
    await centre.receiptPending();
    await until(() => gw.status().buffer.depth === 0, 'buffer drained on receipts');
    expect(gw.status().uplink).toMatchObject({ recordsConfirmed: 6, awaitingReceipt: 0, oldestUnconfirmedMs: 0 });
    expect(gw.metrics()).toMatch(/xiaoan_edge_uplink_records_confirmed_total\{gateway="[^"]+"\} 6/);
  });

  it('sends again what a broker accepted and dropped (no subscriber there), until every record lands', async () => {
    const { gw, clock, gatewayId, centre } = await makeGateway({});
    gateways.push(gw);
    await gw.start();
    await until(() => gw.status().uplink?.state === 'connected', 'uplink');
    await new Promise((r) => setTimeout(r, 200));
    gw.inject(readings(clock, 0, 3));
    await until(() => gw.status().buffer.depth === 0, 'first records receipted');
    // the centre goes away (clean session: the broker keeps nothing for it) and the broker
    // acknowledges and drops what the gateway sends, as Mosquitto does for a lost $share group
    await centre.close();
    centres.splice(centres.indexOf(centre), 1);
    const sentBefore = gw.status().uplink!.batchesSent;
    gw.inject(readings(clock, 100, 4));
    gw.inject([{ kind: 'event', device: 'smoke-1', type: 'smoke.alarm', ts: clock.now(), priority: 'alarm', data: {} }]);
    await until(() => gw.status().uplink!.batchesSent === sentBefore + 2 && gw.status().uplink!.inflightBatches === 0, 'PUBACKed into the void');
    expect(gw.status().buffer.depth).toBe(5);
    const back = await centreFor(gatewayId);
    await clock.advance(30_000);
    await until(() => gw.status().buffer.depth === 0, 'resent and receipted');
    const got = back.received.get(gatewayId)!;
    expect([...got].sort((a, b) => a - b)).toEqual([4, 5, 6, 7, 8]);
  });
});

describe('records checked where they are made', () => {
  it('quarantines one malformed record alone, reports it as a health event, and buffers the rest', async () => {
    const { gw, clock, gatewayId } = await makeGateway({});
    gateways.push(gw);
    const { client, got } = await subscriber(gatewayId);
    clients.push(client);
    await gw.start();
    gw.inject([
      { kind: 'reading', device: 'temp-1', metric: 'temperature', ts: clock.now(), value: 20, quality: 'good' },
      { kind: 'reading', device: 'temp-1', metric: 'Temperature °C', ts: clock.now(), value: 21, quality: 'good' },
      { kind: 'reading', device: 'temp-1', metric: 'temperature', ts: clock.now(), value: 22, quality: 'good' },
    ]);
    await until(() => got.readings.length === 2 && got.events.length === 1, 'good readings and the health event');
    expect(got.readings.map((r) => [r.seq, r.value])).toEqual([[1, 20], [2, 22]]);
    const ev = got.events[0]!;
    expect(ev).toMatchObject({ device: gatewayId, type: 'gateway.record_quarantined', priority: 'normal', data: { device: 'temp-1', reason: expect.stringMatching(/^reading: metric: /) } });
    expect(gw.status().buffer.quarantined).toBe(1);
    expect(gw.metrics()).toMatch(/xiaoan_edge_records_quarantined_total\{gateway="[^"]+"\} 1/);
    await until(() => gw.status().buffer.depth === 0, 'receipted');
    const dir = gw.config.dataDir;
    await gw.stop();
    const { openSqliteBuffer } = await import('./buffer.ts');
    const b = openSqliteBuffer({ file: join(dir, 'buffer.sqlite'), maxRecords: 100, clock });
    const q = b.quarantined(10);
    b.close();
    expect(q).toHaveLength(1);
    expect(q[0]).toMatchObject({ device: 'temp-1', reason: expect.stringMatching(/metric/) });
    expect(JSON.parse(q[0]!.raw)).toMatchObject({ kind: 'reading', metric: 'Temperature °C', value: 21 });
  });
});
