// Alarms never wait behind bulk: with the `readings` table locked by a competing transaction (so
// the bulk readings commit cannot finish), a reading that crosses a threshold and an alarm event
// still reach the alert store and the live stream within a couple of seconds, because rules see
// records on arrival and commit their alerts in their own small transaction. The readings'
// receipt waits until they are stored too (custody: docs/delivery.md).
// PostgreSQL only: PGlite is one connection, so a transaction holding a lock there holds every
// other statement of the process too (the alert commit included) — the property cannot exist on it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import pg from 'pg';
import { buildTopic, receiptSchema } from '../contract/index.ts';
import { compileRules } from '../rules/index.ts';
import { createIngestWorker, openStore, startCentralBroker, type CentralBroker, type IngestWorker, type Store } from '../ingest/index.ts';
import { ALERT_CHANNEL, createAlerting, type Alerting } from '../ingest/alerts/index.ts';
import { createTestDatabase, type TestDatabase } from './support/databases.ts';

const SCHOOL = '37/3701/370102/3737000001';
const GW = 'gw-arrival-1';
const topic = (channel: 'readings' | 'events' | 'receipt') => buildTopic({ county: '370102', gatewayId: GW, channel });
const RULES = compileRules([
  { file: 'temp.yaml', text: 'id: temp-over-50\nname: { zh: 温度超过 50 度, en: Temperature above 50 }\ncategory: emergency\nseverity: major\nwhen: { metric: temperature, above: 50 }\n' },
  { file: 'smoke.yaml', text: 'id: smoke-alarm\nname: { zh: 感烟探测器报警, en: Smoke detector alarm }\ncategory: emergency\nseverity: critical\nwhen: { event: smoke.alarm }\n' },
]);

async function until<T>(what: string, fn: () => Promise<T> | T, ms: number): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('rules on arrival, on PostgreSQL (PGlite: one connection, a held lock blocks the alert commit too)', () => {
  let tdb: TestDatabase;
  let store: Store;
  let broker: CentralBroker;
  let alerting: Alerting;
  let worker: IngestWorker;
  let gw: MqttClient;
  const live: string[] = [];
  const receipted = new Set<number>();

  beforeAll(async () => {
    tdb = await createTestDatabase('postgres');
    store = await openStore(tdb.db);
    await store.seedOrgTree({ demo: true });
    await store.registerGateway({ id: GW, county: '370102', orgPath: SCHOOL, name: 'arrival', password: 'gw-password' });
    broker = await startCentralBroker({ port: 0, store, serviceAccounts: [{ username: 'ingest', password: 'ingest-password' }] });
    alerting = await createAlerting({ db: store.db, rules: RULES.rules, tickMs: 0 });
    worker = await createIngestWorker({ store, brokerUrl: broker.url, username: 'ingest', password: 'ingest-password', region: '37', listeners: [alerting.listener], retry: { minMs: 50, maxMs: 200 } });
    await worker.start();
    await store.db.listen(ALERT_CHANNEL, (p) => live.push(p));
    gw = await mqtt.connectAsync(broker.url, { clientId: `${GW}-t`, username: GW, password: 'gw-password', protocolVersion: 4 });
    gw.on('message', (_t, payload) => {
      for (const [a, b] of receiptSchema.parse(JSON.parse(payload.toString())).seqs) for (let s = a; s <= b; s++) receipted.add(s);
    });
    await gw.subscribeAsync(topic('receipt'), { qos: 1 });
  }, 60_000);
  afterAll(async () => {
    gw?.end(true);
    await worker?.stop();
    await alerting?.stop();
    await broker?.close();
    await store?.close();
    await tdb?.drop();
  });

  it('commits a threshold alert and an alarm within 2 s while the readings table is locked; the readings receipt waits for their storage', async () => {
    const locker = new pg.Client({ connectionString: tdb.url });
    await locker.connect();
    const alerts = async () => (await store.db.query<{ rule_id: string }>('select rule_id from alerts order by rule_id')).rows.map((r) => r.rule_id);
    try {
      await locker.query('begin');
      await locker.query('lock table readings in access exclusive mode');
      const now = Date.now();
      await gw.publishAsync(topic('readings'), JSON.stringify({
        v: 1, gateway: GW, sentAt: now,
        readings: [20, 55].map((value, i) => ({ seq: 10 + i, device: 'temp-1', metric: 'temperature', ts: now - 1000 + i * 1000, value, quality: 'good' })),
      }), { qos: 1 });
      const t0 = Date.now();
      await until('the threshold alert, readings still locked', async () => (await alerts()).includes('temp-over-50'), 2000);
      const thresholdMs = Date.now() - t0;
      await gw.publishAsync(topic('events'), JSON.stringify({
        v: 1, gateway: GW, sentAt: Date.now(), events: [{ seq: 12, device: 'smoke-1', type: 'smoke.alarm', ts: Date.now(), priority: 'alarm', drill: false, data: {} }],
      }), { qos: 1 });
      await until('the smoke alarm alert', async () => (await alerts()).includes('smoke-alarm'), 2000);
      await until('both on the live stream', () => live.some((p) => p.includes('temp-over-50')) && live.some((p) => p.includes('smoke-alarm')), 2000);
      // the event is stored and receipted (its own table); the readings are not stored yet, so not receipted
      await until('the event receipt', () => receipted.has(12), 2000);
      expect(worker.stats().stored.readings).toBe(0);
      expect(receipted.has(10) || receipted.has(11)).toBe(false);
      expect(thresholdMs).toBeLessThan(2000);
    } finally {
      await locker.query('rollback');
      await locker.end();
    }
    await until('readings stored after the lock', () => worker.stats().stored.readings === 2, 20_000);
    await until('the readings receipt', () => receipted.has(10) && receipted.has(11), 5000);
    expect(await alerts()).toEqual(['smoke-alarm', 'temp-over-50']);
  }, 60_000);
});
