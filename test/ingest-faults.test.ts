// Cross-process faults of the ingest tier, on real peers of our own: a Mosquitto broker (MQTT 5,
// shared subscriptions) and a PostgreSQL cluster (initdb + pg_ctl on a free port) that the tests
// stop and restart. Gateways are plain MQTT clients publishing QoS 1, as the edge does.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import pg from 'pg';
import { buildTopic, type ReadingBatch } from '../contract/index.ts';
import { openStore, createIngestWorker, type Store, type IngestWorker, type StoredBatch } from '../ingest/index.ts';
import { startMosquitto, startPostgresCluster, type Peer } from './support/peers.ts';

const SCHOOL = '37/3701/370102/3737000001';
const GATEWAYS = ['gw-f1', 'gw-f2', 'gw-f3'];

async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 40_000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function connectPublisher(url: string, id: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: `${id}-pub-${Math.random().toString(16).slice(2, 8)}`, protocolVersion: 5, clean: true, reconnectPeriod: 200 });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

// A record's ts is fixed when the gateway first buffers it; a resend carries the same ts.
const T0 = Date.now() - 60_000;
const batch = (gw: string, from: number, n: number, value = 1): ReadingBatch => ({
  v: 1, gateway: gw, sentAt: Date.now(),
  readings: Array.from({ length: n }, (_, i) => ({
    seq: from + i, device: 'temp-1', metric: 'temperature', ts: T0 + from + i, value: value + i / 1000, quality: 'good' as const,
  })),
});

describe('ingest faults on Mosquitto and a PostgreSQL cluster of our own', () => {
  let cluster: Awaited<ReturnType<typeof startPostgresCluster>>;
  let mosq: Peer;
  let store: Store;
  let dbUrl: string;
  const workers: IngestWorker[] = [];
  const pubs: MqttClient[] = [];
  let seen: StoredBatch[] = [];

  beforeAll(async () => {
    cluster = await startPostgresCluster();
    dbUrl = await cluster.createDatabase('xiaoan');
    mosq = await startMosquitto({ persistence: true });
    store = await openStore(dbUrl);
    await store.seedOrgTree({ demo: true });
    for (const id of GATEWAYS) await store.registerGateway({ id, county: '370102', orgPath: SCHOOL, password: `${id}-password` });
  });
  afterEach(async () => {
    for (const p of pubs.splice(0)) p.end(true);
    for (const w of workers.splice(0)) await w.stop();
    await store.db.query('truncate readings, latest_readings, dead_letters, events, record_seqs, gateway_floor');
    seen = [];
  });
  afterAll(async () => {
    await store?.close();
    await mosq?.close();
    await cluster?.close();
  });

  let replicas = 0;
  async function worker(group = 'city-3701', clientId?: string): Promise<IngestWorker> {
    const w = await createIngestWorker({
      // every worker of the region its own replica name: a taken client id is refused
      ...(clientId ? { clientId } : { replica: `r${++replicas}` }),
      store, brokerUrl: mosq.url, username: 'ingest', password: 'x', region: '3701', shareGroup: group,
      listeners: [{ name: 'probe', async onStored(b) { seen.push(b); } }],
      retry: { minMs: 50, maxMs: 500 }, reconnectPeriodMs: 200,
    });
    await w.start();
    workers.push(w);
    return w;
  }

  const counts = async () => {
    const r = await store.db.query<{ n: number; d: number }>('select count(*)::int as n, count(distinct (gateway_id, seq))::int as d from readings');
    return r.rows[0]!;
  };

  it('splits one region between two workers of a share group, each record stored once', async () => {
    const a = await worker();
    const b = await worker();
    expect(a.stats().protocolVersion).toBe(5);
    const pub = await connectPublisher(mosq.url, 'gw-f1');
    pubs.push(pub);
    const topic = buildTopic({ county: '370102', gatewayId: 'gw-f1', channel: 'readings' });
    for (let i = 0; i < 40; i++) await pub.publishAsync(topic, JSON.stringify(batch('gw-f1', i * 50, 50)), { qos: 1 });
    await until('all stored', async () => (await counts()).n === 2000);
    expect(await counts()).toEqual({ n: 2000, d: 2000 });
    expect(a.stats().stored.readings).toBeGreaterThan(0);
    expect(b.stats().stored.readings).toBeGreaterThan(0);
    expect(a.stats().stored.readings + b.stats().stored.readings).toBe(2000);
    expect(seen.flatMap((s) => s.readings)).toHaveLength(2000);
  });

  it('loses nothing and duplicates nothing when PostgreSQL restarts in the middle of a stream', async () => {
    const w = await worker();
    const pubsAll = await Promise.all(GATEWAYS.map((g) => connectPublisher(mosq.url, g)));
    pubs.push(...pubsAll);
    const per = 60, size = 100;
    const streams = GATEWAYS.map(async (g, k) => {
      const topic = buildTopic({ county: '370102', gatewayId: g, channel: 'readings' });
      for (let i = 0; i < per; i++) {
        await pubsAll[k]!.publishAsync(topic, JSON.stringify(batch(g, i * size, size)), { qos: 1 });
        // the edge resends what was not acknowledged; here every 10th batch is sent twice as well
        if (i % 10 === 0) await pubsAll[k]!.publishAsync(topic, JSON.stringify(batch(g, i * size, size)), { qos: 1 });
        await new Promise((r) => setTimeout(r, 5));
      }
    });
    await until('stream under way', () => w.stats().stored.readings > 1000);
    await cluster.stop();
    await until('worker notices', () => w.stats().storage === 'retrying');
    await new Promise((r) => setTimeout(r, 1000)); // the stream keeps arriving while the database is down
    await cluster.start();
    await Promise.all(streams);
    const expected = GATEWAYS.length * per * size;
    await until('all stored after restart', async () => (await counts().catch(() => ({ n: 0, d: 0 }))).n >= expected, 60_000);
    expect(await counts()).toEqual({ n: expected, d: expected });
    expect(w.stats().storageRetries).toBeGreaterThan(0);
    expect(w.stats().storage).toBe('ok');
    // listeners saw every record exactly once
    const keys = seen.flatMap((s) => s.readings.map((r) => `${s.gateway.id}:${r.seq}`));
    const extra = [...new Set(keys)].filter((k) => !/^gw-f[123]:\d+$/.test(k) || Number(k.split(':')[1]) >= per * size);
    expect(extra.slice(0, 5)).toEqual([]);
    expect(new Set(keys).size).toBe(expected);
    expect(keys.length).toBe(expected);
  });

  it('resumes by itself when the broker restarts', async () => {
    const w = await worker('city-3701', 'ingest-fault-test'); // a stable id: the broker keeps its session
    const pub = await connectPublisher(mosq.url, 'gw-f2');
    pubs.push(pub);
    const topic = buildTopic({ county: '370102', gatewayId: 'gw-f2', channel: 'readings' });
    for (let i = 0; i < 10; i++) await pub.publishAsync(topic, JSON.stringify(batch('gw-f2', i * 10, 10)), { qos: 1 });
    await until('first part', async () => (await counts()).n === 100);
    await mosq.stop();
    await until('worker sees the broker gone', () => w.stats().lanes.readings.state === 'disconnected');
    await mosq.start();
    await until('worker back', () => w.stats().lanes.readings.state === 'connected' && w.stats().lanes.readings.connects >= 2);
    await until('publisher back', () => pub.connected);
    for (let i = 10; i < 20; i++) await pub.publishAsync(topic, JSON.stringify(batch('gw-f2', i * 10, 10)), { qos: 1 });
    await until('second part', async () => (await counts()).n === 200);
    expect(await counts()).toEqual({ n: 200, d: 200 });
  });

  it('stores and passes on alarms while reading batches are stuck behind a locked table', async () => {
    const w = await worker();
    const pub = await connectPublisher(mosq.url, 'gw-f1');
    pubs.push(pub);
    const locker = new pg.Client({ connectionString: dbUrl });
    await locker.connect();
    try {
      await locker.query('begin');
      await locker.query('lock table readings in access exclusive mode');
      const rt = buildTopic({ county: '370102', gatewayId: 'gw-f1', channel: 'readings' });
      for (let i = 0; i < 20; i++) await pub.publishAsync(rt, JSON.stringify(batch('gw-f1', 50_000 + i * 100, 100)), { qos: 1 });
      await until('readings waiting', () => w.stats().pendingRecords >= 100);
      const et = buildTopic({ county: '370102', gatewayId: 'gw-f1', channel: 'events' });
      await pub.publishAsync(et, JSON.stringify({
        v: 1, gateway: 'gw-f1', sentAt: Date.now(),
        events: [{ seq: 90_000, device: 'smoke-1', type: 'smoke.alarm', ts: Date.now(), priority: 'alarm', drill: false, data: {} }],
      }), { qos: 1 });
      await until('alarm passed on while readings wait', () => seen.some((b) => b.events.some((e) => e.seq === 90_000)));
      expect(w.stats().stored.readings).toBe(0);
      expect((await store.db.query<{ n: number }>("select count(*)::int as n from events where seq = 90000")).rows[0]!.n).toBe(1);
    } finally {
      await locker.query('rollback');
      await locker.end();
    }
    await until('readings stored after the lock', () => w.stats().stored.readings === 2000);
  });

  it('dead-letters poison messages, including one the database refuses, while the stream goes on', async () => {
    // A trigger stands in for data the database refuses (a constraint added later, say).
    await store.db.exec(`create or replace function refuse_666() returns trigger language plpgsql as $$
      begin if new.value = 666 then raise exception 'value 666 refused by policy'; end if; return new; end $$;
      create trigger refuse_666 before insert on readings_default for each row execute function refuse_666();`);
    for (const part of (await store.db.query<{ t: string }>(`select c.relname as t from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent where p.relname = 'readings'`)).rows) {
      await store.db.exec(`create or replace trigger refuse_666 before insert on ${part.t} for each row execute function refuse_666()`);
    }
    try {
      const w = await worker();
      const pub = await connectPublisher(mosq.url, 'gw-f3');
      pubs.push(pub);
      const topic = buildTopic({ county: '370102', gatewayId: 'gw-f3', channel: 'readings' });
      for (let i = 0; i < 30; i++) {
        await pub.publishAsync(topic, JSON.stringify(batch('gw-f3', i * 10, 10)), { qos: 1 });
        if (i === 5) await pub.publishAsync(topic, '{"v":1,"gateway":"gw-f3", oops', { qos: 1 });
        if (i === 10) await pub.publishAsync(topic, JSON.stringify({ ...batch('gw-f3', 9000, 1), readings: [{ seq: 9000, device: 'temp-1', metric: 'temperature', ts: 5, value: 1 }] }), { qos: 1 });
        if (i === 15) await pub.publishAsync(topic, JSON.stringify(batch('gw-f3', 10_000, 3, 666)), { qos: 1 });
      }
      await until('stream stored', async () => (await counts()).n === 300);
      await until('three dead letters', () => w.stats().deadLetters.total === 3);
      const r = await store.db.query<{ reason: string; detail: string }>('select reason, detail from dead_letters order by id');
      expect(r.rows.map((x) => x.reason).sort()).toEqual(['not_json', 'schema', 'storage']);
      expect(r.rows.find((x) => x.reason === 'storage')!.detail).toMatch(/value 666 refused/);
      expect(r.rows.find((x) => x.reason === 'schema')!.detail).toMatch(/readings\[0\]\.ts/);
      expect(await counts()).toEqual({ n: 300, d: 300 });
    } finally {
      await store.db.exec('drop function refuse_666() cascade');
    }
  });
});
