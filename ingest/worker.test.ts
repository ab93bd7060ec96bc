// The ingest worker against the embedded central broker (aedes, MQTT 3.1.1) on PGlite and on
// PostgreSQL; real MQTT clients stand in for gateways.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { buildTopic, receiptSchema, type Command, type EventBatch, type ReadingBatch, type Receipt } from '../contract/index.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../test/support/databases.ts';
import { openStore, type Store } from './store.ts';
import { startCentralBroker, type CentralBroker } from './broker.ts';
import { createIngestWorker, type IngestWorker } from './worker.ts';
import { scopeOf } from './scope.ts';
import type { BatchListener, StoredBatch } from './types.ts';

const SCHOOL_A = '37/3701/370102/3737000001';
const SCHOOL_B = '37/3701/370103/3737000002';
const topicA = (channel: 'readings' | 'events' | 'status' | 'cmd-result' | 'receipt') => buildTopic({ county: '370102', gatewayId: 'gw-a', channel });
/** every seq a list of receipts names */
const named = (rs: Receipt[]) => rs.flatMap((r) => r.seqs.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, i) => a + i)));

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function connectGateway(url: string, id: string, password: string, will?: { topic: string; payload: string }): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, {
      // a gateway connects as exactly its id, a service account under xiaoan-{username}- (contract/mqtt-identity.ts)
      clientId: id.startsWith('gw-') ? id : `xiaoan-${id}-test-${Math.random().toString(16).slice(2, 8)}`, username: id, password, protocolVersion: 4, reconnectPeriod: 0,
      ...(will ? { will: { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: true } } : {}),
    });
    c.once('connect', () => resolve(c));
    c.once('error', (e) => { c.end(true); reject(e); });
  });
}

const pub = (c: MqttClient, topic: string, payload: string | object) =>
  c.publishAsync(topic, typeof payload === 'string' ? payload : JSON.stringify(payload), { qos: 1 });

describe.each(ENGINES)('ingest worker via the central broker on %s', (engine) => {
  let t: TestDatabase;
  let store: Store;
  let broker: CentralBroker;
  let worker: IngestWorker;
  const stored: StoredBatch[] = [];
  const statuses: string[] = [];
  const listener: BatchListener = {
    name: 'probe',
    async onStored(b) { stored.push(b); },
    async onGatewayStatus(s) { statuses.push(`${s.gateway}:${s.state}:${s.orgPath}`); },
  };
  const failing: BatchListener = { name: 'always-fails', async onStored() { throw new Error('boom'); } };
  let gw: MqttClient;
  const receipts: Receipt[] = [];

  beforeAll(async () => {
    t = await createTestDatabase(engine);
    store = await openStore(t.db);
    await store.seedOrgTree({ demo: true });
    await store.registerGateway({ id: 'gw-a', county: '370102', orgPath: SCHOOL_A, password: 'gw-a-password' });
    await store.registerGateway({ id: 'gw-b', county: '370103', orgPath: SCHOOL_B, password: 'gw-b-password' });
    broker = await startCentralBroker({ port: 0, store, serviceAccounts: [{ username: 'ingest', password: 'ingest-password' }] });
    worker = await createIngestWorker({
      store, brokerUrl: broker.url, username: 'ingest', password: 'ingest-password', region: '37', shareGroup: 'g1',
      listeners: [failing, listener], gatewayCacheMs: { unknown: 0 },
    });
    await worker.start();
    gw = await connectGateway(broker.url, 'gw-a', 'gw-a-password', {
      topic: topicA('status'), payload: JSON.stringify({ v: 1, gateway: 'gw-a', state: 'offline', ts: Date.now() }),
    });
    await gw.subscribeAsync(topicA('receipt'), { qos: 1 });
    gw.on('message', (topic, payload) => {
      if (topic === topicA('receipt')) receipts.push(receiptSchema.parse(JSON.parse(payload.toString())));
    });
  });
  afterAll(async () => {
    gw?.end(true);
    await worker?.stop();
    await broker?.close();
    await store?.close();
    await t?.drop();
  });

  it('falls back to MQTT 3.1.1 on aedes and is connected', () => {
    const s = worker.stats();
    expect(s.protocolVersion).toBe(4);
    expect(s.lanes.readings.state).toBe('connected');
  });

  it('refuses a wrong gateway password', async () => {
    await expect(connectGateway(broker.url, 'gw-a', 'nope-nope')).rejects.toThrow(/[Bb]ad username or password|Not authorized|refused/);
  });

  it('learns devices from the birth and tells listeners once', async () => {
    await pub(gw, topicA('status'), {
      v: 1, gateway: 'gw-a', state: 'online', ts: Date.now(),
      devices: [{ id: 'smoke-1', profile: 'smoke-photoelectric-generic', state: 'online', lastSeen: null, expectedIntervalMs: 60_000 }],
    });
    await until('device', async () => (await store.queries.listDevices(scopeOf(SCHOOL_A))).length === 1);
    await until('status listener', () => statuses.includes(`gw-a:online:${SCHOOL_A}`));
  });

  it('stores readings exactly once, acknowledges, and hands listeners only new records', async () => {
    const now = Date.now();
    const batch = (seqs: number[]): ReadingBatch => ({
      v: 1, gateway: 'gw-a', sentAt: now,
      readings: seqs.map((seq) => ({ seq, device: 'smoke-1', metric: 'smoke_density', ts: now - 1000 + seq, value: seq / 100, quality: 'good' })),
    });
    await pub(gw, topicA('readings'), batch([1, 2, 3]));
    await pub(gw, topicA('readings'), batch([2, 3, 4])); // a redelivery overlapping a new record
    await until('stored', () => worker.stats().stored.readings === 4);
    const n = await t.db.query<{ n: number }>("select count(*)::int as n from readings where gateway_id = 'gw-a'");
    expect(n.rows[0]!.n).toBe(4);
    expect(worker.stats().duplicates.readings).toBe(2);
    await until('listener', () => stored.flatMap((b) => b.readings).length === 4);
    expect(stored.flatMap((b) => b.readings.map((r) => r.seq)).sort()).toEqual([1, 2, 3, 4]);
    expect(stored[0]!.gateway).toEqual({ id: 'gw-a', orgPath: SCHOOL_A, county: '370102' });
    expect(worker.stats().listenerErrors['always-fails']).toBeGreaterThan(0);
    // custody: after the commit the gateway is told every seq it sent, the duplicates too
    await until('receipts', () => new Set(named(receipts)).size === 4);
    expect([...new Set(named(receipts))].sort()).toEqual([1, 2, 3, 4]);
    expect(named(receipts).filter((x) => x === 2).length).toBe(2); // each message receipted, the redelivery as well
    expect(receipts.every((r) => r.gateway === 'gw-a')).toBe(true);
  });

  it('stores the 99 good records of a batch and dead-letters the bad one alone, receipting all 100', async () => {
    receipts.length = 0;
    const before = worker.stats().stored.readings;
    const now = Date.now();
    const readings: unknown[] = Array.from({ length: 100 }, (_, i) => ({ seq: 1000 + i, device: 'smoke-1', metric: 'smoke_density', ts: now - 100 + i, value: i / 1000 }));
    readings[37] = { seq: 1037, device: 'smoke-1', metric: 'Smoke Density', ts: now, value: 1 };
    const deadBefore = (await store.queries.deadLetters(scopeOf(SCHOOL_A))).length;
    await pub(gw, topicA('readings'), { v: 1, gateway: 'gw-a', sentAt: now, readings });
    await until('99 stored', () => worker.stats().stored.readings - before === 99);
    const n = await t.db.query<{ n: number }>("select count(*)::int as n from readings where gateway_id = 'gw-a' and seq between 1000 and 1099");
    expect(n.rows[0]!.n).toBe(99);
    const dead = (await store.queries.deadLetters(scopeOf(SCHOOL_A))).slice(0, -deadBefore || undefined);
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ reason: 'schema', gatewayId: 'gw-a' });
    expect(dead[0]!.detail).toMatch(/readings\[37\]\.metric/);
    expect(JSON.parse(dead[0]!.payload)).toMatchObject({ seq: 1037, metric: 'Smoke Density' });
    await until('receipt of all 100', () => named(receipts).length === 100);
    expect(receipts.flatMap((r) => r.seqs)).toEqual([[1000, 1099]]);
  });

  it('leaves records of an unregistered gateway on the gateway (no dead letter, no receipt) until it is registered', async () => {
    const svc = await connectGateway(broker.url, 'ingest', 'ingest-password');
    const watcher = await connectGateway(broker.url, 'ingest', 'ingest-password');
    const newTopic = (channel: 'readings' | 'receipt') => buildTopic({ county: '370102', gatewayId: 'gw-new', channel });
    const got: Receipt[] = [];
    await watcher.subscribeAsync(newTopic('receipt'), { qos: 1 });
    watcher.on('message', (_t, p) => got.push(receiptSchema.parse(JSON.parse(p.toString()))));
    const body = { v: 1, gateway: 'gw-new', sentAt: Date.now(), readings: [{ seq: 7, device: 'd1', metric: 'temperature', ts: Date.now(), value: 21 }] };
    const deadBefore = worker.stats().deadLetters.total;
    const waitingBefore = worker.stats().awaitingRegistration;
    await pub(svc, newTopic('readings'), body);
    await until('counted as awaiting registration', () => worker.stats().awaitingRegistration === waitingBefore + 1);
    await new Promise((r) => setTimeout(r, 200)); // a receipt would have come by now
    expect(worker.stats().deadLetters.total).toBe(deadBefore);
    expect(got).toEqual([]);
    expect((await t.db.query("select 1 from dead_letters where gateway_id = 'gw-new'")).rowCount).toBe(0);
    // registered now: the gateway's resend is stored and receipted
    await store.registerGateway({ id: 'gw-new', county: '370102', orgPath: '37/3701/370102', password: 'gw-new-password' });
    await pub(svc, newTopic('readings'), body);
    await until('receipt', () => got.length === 1);
    expect(got[0]!.seqs).toEqual([[7, 7]]);
    expect((await t.db.query("select 1 from readings where gateway_id = 'gw-new' and seq = 7")).rowCount).toBe(1);
    svc.end(true);
    watcher.end(true);
  });

  it('stores alarm events and passes them on', async () => {
    const ev: EventBatch = {
      v: 1, gateway: 'gw-a', sentAt: Date.now(),
      events: [{ seq: 100, device: 'smoke-1', type: 'smoke.alarm', ts: Date.now(), priority: 'alarm', drill: true, data: { density: 0.3 } }],
    };
    await pub(gw, topicA('events'), ev);
    await until('event listener', () => stored.some((b) => b.events.some((e) => e.seq === 100 && e.drill)));
    await pub(gw, topicA('events'), ev);
    await until('dup counted', () => worker.stats().duplicates.events === 1);
    expect(stored.flatMap((b) => b.events)).toHaveLength(1);
  });

  it('dead-letters bad input with its reason and goes on', async () => {
    const before = worker.stats().deadLetters.total;
    const storedBefore = worker.stats().stored.readings;
    const svc = await connectGateway(broker.url, 'ingest', 'ingest-password'); // a service account may publish anywhere
    await pub(gw, topicA('readings'), 'not json {');
    await pub(gw, topicA('readings'), { v: 1, gateway: 'gw-a', sentAt: Date.now(), readings: [{ seq: 5, device: 'smoke-1', metric: 'Bad Metric', ts: 1, value: 1 }] });
    await pub(gw, topicA('readings'), { v: 2, gateway: 'gw-a', sentAt: Date.now(), readings: [] });
    await pub(svc, buildTopic({ county: '370102', gatewayId: 'gw-zz', channel: 'readings' }), { v: 1, gateway: 'gw-zz', sentAt: Date.now(), readings: [{ seq: 1, device: 'd', metric: 'm', ts: Date.now(), value: 1 }] });
    await pub(svc, topicA('readings'), { v: 1, gateway: 'gw-b', sentAt: Date.now(), readings: [{ seq: 1, device: 'd', metric: 'm', ts: Date.now(), value: 1 }] });
    await pub(svc, buildTopic({ county: '370103', gatewayId: 'gw-a', channel: 'readings' }), { v: 1, gateway: 'gw-a', sentAt: Date.now(), readings: [{ seq: 1, device: 'd', metric: 'm', ts: Date.now(), value: 1 }] });
    await pub(svc, 'xiaoan/v1/37/3701/370100/gw-a/readings', 'x'); // county 370100 is the city itself
    // the stream goes on after the poison
    await pub(gw, topicA('readings'), { v: 1, gateway: 'gw-a', sentAt: Date.now(), readings: [{ seq: 6, device: 'smoke-1', metric: 'smoke_density', ts: Date.now(), value: 0.01 }] });
    svc.end(true);
    await until('dead letters', () => worker.stats().deadLetters.total - before === 6);
    await until('stream goes on', () => worker.stats().stored.readings === storedBefore + 1);
    const rows = (await store.queries.deadLetters(scopeOf('37'))).filter((r) => !r.detail.includes('readings[37]'));
    const reasons = rows.map((r) => r.reason).sort();
    // gw-zz is not registered: not invalid, so no dead letter (its records wait on the gateway)
    expect(reasons).toEqual(['gateway_mismatch', 'gateway_mismatch', 'not_json', 'schema', 'schema', 'topic']);
    expect(rows.find((r) => r.reason === 'schema' && r.detail.includes('metric'))?.detail).toMatch(/readings\[0\]\.metric/);
    // the school sees its own dead letters, the other school none of them
    expect((await store.queries.deadLetters(scopeOf(SCHOOL_A))).length).toBeGreaterThanOrEqual(4);
    expect(await store.queries.deadLetters(scopeOf(SCHOOL_B))).toEqual([]);
    expect(worker.stats().deadLetters.byReason).toMatchObject({ not_json: 1 });
    expect(worker.stats().deadLetters.byReason.unknown_gateway).toBeUndefined();
  });

  it('keeps a gateway to its own topics', async () => {
    // gw-b publishing as gw-a: the broker refuses (aedes closes the connection for a refused publish).
    // (gw-b, because gw-a's own client id is taken by the test's gateway, and a second login as gw-a would replace it)
    const sneaky = await connectGateway(broker.url, 'gw-b', 'gw-b-password');
    const other = buildTopic({ county: '370102', gatewayId: 'gw-a', channel: 'readings' });
    sneaky.publish(other, JSON.stringify({ v: 1, gateway: 'gw-a', sentAt: Date.now(), readings: [{ seq: 77, device: 'sneaky', metric: 'm', ts: Date.now(), value: 1 }] }), { qos: 0 });
    const granted = await sneaky.subscribeAsync(buildTopic({ county: '370102', gatewayId: 'gw-a', channel: 'cmd', sub: '#' }), { qos: 1 }).catch(() => []);
    sneaky.end(true);
    expect(granted.every((g) => g.qos === 128)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    const n = await t.db.query<{ n: number }>("select count(*)::int as n from readings where device_id = 'sneaky'");
    expect(n.rows[0]!.n).toBe(0);
  });

  it('sends a command and awaits its result; times out when nobody answers', async () => {
    await gw.subscribeAsync(buildTopic({ county: '370102', gatewayId: 'gw-a', channel: 'cmd', sub: '#' }), { qos: 1 });
    gw.on('message', (topic, payload) => {
      if (!topic.includes('/cmd/')) return;
      const cmd = JSON.parse(payload.toString()) as Command;
      void pub(gw, topicA('cmd-result'), { v: 1, id: cmd.id, ok: true, message: `did ${cmd.kind}`, ts: Date.now() });
    });
    const cmd: Command = { v: 1, id: 'c-1', kind: 'device.write', device: 'gate-1', point: 'unlock', value: true, issuedBy: 'desk', issuedAt: Date.now() };
    const r = await worker.commands.send('gw-a', cmd, 5000);
    expect(r).toMatchObject({ id: 'c-1', ok: true, message: 'did device.write' });
    await expect(worker.commands.send('gw-b', { ...cmd, id: 'c-2' }, 300)).rejects.toThrow(/did not answer/);
    await expect(worker.commands.send('gw-zz', { ...cmd, id: 'c-3' }, 300)).rejects.toThrow(/not registered/);
  });

  it('marks the gateway offline when its last will fires', async () => {
    gw.stream.destroy(); // a crash, not a clean disconnect
    await until('offline', async () => (await store.queries.listGateways(scopeOf(SCHOOL_A)))[0]?.state === 'offline');
    await until('offline listener', () => statuses.includes(`gw-a:offline:${SCHOOL_A}`));
    expect((await store.queries.listDevices(scopeOf(SCHOOL_A))).every((d) => d.state === 'offline')).toBe(true);
  });
});
