// Cross-tier: a gateway (a real MQTT client) → the central broker → the ingest worker → the
// alerting → the reference receiver. A smoke rule, a gate-forced rule and an offline rule each
// raise, escalate, clear and reach the receiver exactly once — across a restart of the ingest
// worker with its alerting and a restart of the receiver. On PGlite and on PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { buildTopic, type GatewayStatus } from '../contract/index.ts';
import { compileRules } from '../rules/index.ts';
import { openStore, startCentralBroker, createIngestWorker, type Store, type CentralBroker, type IngestWorker } from '../ingest/index.ts';
import { createAlerting, startReferenceReceiver, type Alerting, type ReferenceReceiver } from '../ingest/alerts/index.ts';
import { scopeOf } from '../ingest/scope.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from './support/databases.ts';

const SCHOOL = '37/3701/370102/3737000001';
const GW = 'gw-3737000001';
const topic = (channel: 'readings' | 'events' | 'status') => buildTopic({ county: '370102', gatewayId: GW, channel });

// the built-in rules' shapes with durations short enough for a test on real time
const RULES = [
  `id: smoke-sustained
name: { zh: 烟雾浓度持续超标, en: Smoke density sustained above threshold }
category: emergency
severity: critical
when: { metric: smoke_density, above: "\${threshold}", for: 2s }
clear: { below: "\${threshold} * 0.7", for: 1s }
params: { threshold: 0.15 }
escalate: { after: 1500ms }
actions: [ { release-gates: building } ]
`,
  `id: gate-forced
name: { zh: 门禁被强行打开, en: Gate forced open }
category: emergency
severity: major
when: { event: gate.forced_open }
clear: { quiet: 8s }
escalate: { after: 1500ms }
`,
  `id: device-silent
name: { zh: 设备离线或无数据, en: Device offline or silent }
category: hazard
severity: major
when: { absent: { factor: 3, offline: true } }
escalate: { after: 1500ms }
`,
];

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function connectGateway(url: string): Promise<MqttClient> {
  const will = JSON.stringify({ v: 1, gateway: GW, state: 'offline', ts: Date.now() });
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, {
      clientId: `${GW}-${Math.random().toString(16).slice(2, 8)}`, username: GW, password: 'gw-password', protocolVersion: 4, reconnectPeriod: 0,
      will: { topic: topic('status'), payload: Buffer.from(will), qos: 1, retain: true },
    });
    c.once('connect', () => resolve(c));
    c.once('error', (e) => { c.end(true); reject(e); });
  });
}

describe.each(ENGINES)('rules → alerts → provincial modules on %s', (engine) => {
  let tdb: TestDatabase;
  let store: Store;
  let broker: CentralBroker;
  let worker: IngestWorker;
  let alerting: Alerting;
  let receiver: ReferenceReceiver;
  let dir: string;
  let gw: MqttClient;
  let seq = 0;
  const rules = compileRules(RULES.map((text, i) => ({ file: `r${i}.yaml`, text })));

  const startReceiver = (port?: number) => startReferenceReceiver({ secret: 'module-secret', dir, port });
  async function startTier() {
    alerting = await createAlerting({
      db: store.db,
      rules,
      tickMs: 200,
      delivery: { hazardUrl: receiver.hazardUrl, emergencyUrl: receiver.emergencyUrl, secret: 'module-secret', backoffMs: 200, maxBackoffMs: 500 },
      commands: { send: async (_g, c) => ({ v: 1, id: c.id, ok: true, ts: Date.now() }) },
    });
    worker = await createIngestWorker({ store, brokerUrl: broker.url, username: 'ingest', password: 'ingest-password', region: '37', listeners: [alerting.listener] });
    // the alerting's commands go down through this worker
    await worker.start();
  }
  async function stopTier() {
    await worker.stop();
    await alerting.stop();
  }
  const smoke = (values: number[], spacingMs = 1000) => {
    const now = Date.now();
    return gw.publishAsync(topic('readings'), JSON.stringify({
      v: 1, gateway: GW, sentAt: now,
      readings: values.map((value, i) => ({ seq: ++seq, device: 'smoke-1', metric: 'smoke_density', ts: now - (values.length - 1 - i) * spacingMs, value, quality: 'good' })),
    }), { qos: 1 });
  };
  const birth = (state: 'online' | 'offline') => {
    const s: GatewayStatus = {
      v: 1, gateway: GW, state, ts: Date.now(),
      devices: [
        { id: 'smoke-1', profile: 'smoke-photoelectric-generic', state: 'online', lastSeen: Date.now(), expectedIntervalMs: 60_000 },
        { id: 'gate-1', profile: 'gate-controller-generic', state: 'online', lastSeen: Date.now(), expectedIntervalMs: 60_000 },
      ],
    };
    return gw.publishAsync(topic('status'), JSON.stringify(s), { qos: 1, retain: true });
  };
  const transitions = (rule: string) => receiver.received().filter((d) => d.payload.alert.ruleId === rule).map((d) => d.payload.transition);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xiaoan-modules-'));
    tdb = await createTestDatabase(engine);
    store = await openStore(tdb.db);
    await store.seedOrgTree({ demo: true });
    await store.registerGateway({ id: GW, county: '370102', orgPath: SCHOOL, name: 'demo', password: 'gw-password' });
    broker = await startCentralBroker({ port: 0, store, serviceAccounts: [{ username: 'ingest', password: 'ingest-password' }] });
    receiver = await startReceiver();
    await startTier();
    gw = await connectGateway(broker.url);
    await birth('online');
  });
  afterAll(async () => {
    gw?.end(true);
    await stopTier().catch(() => {});
    await broker?.close();
    await receiver?.close();
    await store?.close();
    await tdb?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('raise, escalate, clear, exactly once each, across restarts', async () => {
    expect(rules.errors).toEqual([]);
    const desk = scopeOf(SCHOOL);
    await until('devices', async () => (await tdb.db.query(`select 1 from devices where gateway_id = $1`, [GW])).rowCount === 2);

    // smoke above 0.15 over 3 s → raised (emergency); a gate forced open → raised
    await smoke([0.2, 0.2, 0.2, 0.2]);
    await gw.publishAsync(topic('events'), JSON.stringify({ v: 1, gateway: GW, sentAt: Date.now(), events: [{ seq: ++seq, device: 'gate-1', type: 'gate.forced_open', ts: Date.now(), priority: 'alarm', drill: false, data: {} }] }), { qos: 1 });
    await until('smoke and gate raised at the receiver', () => transitions('smoke-sustained').includes('raised') && transitions('gate-forced').includes('raised'));
    const [smokeAlert] = await alerting.list(desk, { ruleId: 'smoke-sustained' });
    expect(smokeAlert!.category).toBe('emergency');

    // nobody acknowledges: escalated to the county, then the city
    await until('escalated twice', () => transitions('smoke-sustained').filter((t) => t === 'escalated').length === 2 && transitions('gate-forced').filter((t) => t === 'escalated').length === 2);
    expect((await alerting.get(desk, smokeAlert!.id))!.escalatedTo).toBe('37/3701');

    // restart the ingest worker and its alerting; the receiver restarts too
    await stopTier();
    const port = receiver.port;
    await receiver.close();
    receiver = await startReceiver(port);
    await startTier();
    await smoke([0.3, 0.3, 0.3]); // still high after the restart: no second alert
    await new Promise((r) => setTimeout(r, 800));
    expect((await alerting.list(desk, { ruleId: 'smoke-sustained' })).length).toBe(1);

    // smoke back to normal for more than 1 s → cleared; gate quiet for 8 s → cleared
    await smoke([0.02, 0.02, 0.02]);
    await until('smoke and gate cleared at the receiver', () => transitions('smoke-sustained').includes('cleared') && transitions('gate-forced').includes('cleared'), 30_000);

    // the gateway drops: its last will marks it offline → device-silent for its devices
    gw.stream.destroy();
    await until('offline raised', () => transitions('device-silent').filter((t) => t === 'raised').length === 2);
    await until('offline escalated', () => transitions('device-silent').filter((t) => t === 'escalated').length === 4);
    gw = await connectGateway(broker.url);
    await birth('online');
    await until('offline cleared', () => transitions('device-silent').filter((t) => t === 'cleared').length === 2);

    // exactly once: no idempotency key twice, and each rule's story in order
    await until('outbox drained', async () => (await tdb.db.query<{ n: number }>(`select count(*)::int as n from alert_outbox where delivered_at is null`)).rows[0]!.n === 0);
    const keys = receiver.received().map((d) => d.idempotencyKey);
    expect(new Set(keys).size).toBe(keys.length);
    expect(transitions('smoke-sustained')).toEqual(['raised', 'escalated', 'escalated', 'cleared']);
    expect(transitions('gate-forced')).toEqual(['raised', 'escalated', 'escalated', 'cleared']);
    const perDevice = (device: string) => receiver.received().filter((d) => d.payload.alert.ruleId === 'device-silent' && d.payload.alert.deviceId === device).map((d) => d.payload.transition);
    expect(perDevice('smoke-1')).toEqual(['raised', 'escalated', 'escalated', 'cleared']);
    expect(perDevice('gate-1')).toEqual(['raised', 'escalated', 'escalated', 'cleared']);
    expect(receiver.received().filter((d) => d.payload.alert.ruleId === 'device-silent').every((d) => d.module === 'hazard')).toBe(true);
  });
});
