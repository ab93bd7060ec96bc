// The operator commands of the central store, run through `main` as a person would:
// `xiaoan gateway add|list|remove` and `xiaoan deadletters list|replay`, on real PostgreSQL, and the
// path an unregistered gateway takes: nothing dead-lettered, then `gateway add`, then its resend
// stored and receipted by a running worker.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { buildTopic, receiptSchema, type Receipt } from '../contract/index.ts';
import { createTestDatabase, type TestDatabase } from '../test/support/databases.ts';
import { openStore, startCentralBroker, createIngestWorker, type Store } from '../ingest/index.ts';
import { main } from './main.ts';

async function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l), env });
  return { code, out, err: err.join('\n') };
}

async function until(what: string, fn: () => Promise<unknown> | unknown, ms = 15_000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const SCHOOL = '37/3701/370102/3737000001';

describe('xiaoan gateway and deadletters on PostgreSQL', () => {
  let t: TestDatabase;
  let store: Store;
  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    store = await openStore(t.db);
    await store.seedOrgTree({ demo: true });
  });
  afterAll(async () => {
    await store?.close();
    await t?.drop();
  });
  const db = () => ['--database', t.url];

  it('gateway add reports every problem at once, in terms of the flags', async () => {
    const r = await run(['gateway', 'add', 'gw/1', '--county', '3701', '--org', '37/3701/370103/3737000002', ...db()]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/ID: "gw\/1"/);
    expect(r.err).toMatch(/--county: "3701" .*6-digit county/);
    const r2 = await run(['gateway', 'add', 'gw-x', '--county', '370102', '--org', '37/3701/370103/3737000002', ...db()]);
    expect(r2.code).toBe(2);
    expect(r2.err).toMatch(/--org: .*does not lie in county 370102/);
    const r3 = await run(['gateway', 'add', 'gw-x', '--org', SCHOOL, ...db()]);
    expect(r3.err).toMatch(/missing --county/);
  });

  it('gateway add registers (generating a password once), list shows it, remove forgets it; each change audited', async () => {
    const r = await run(['gateway', 'add', 'gw-cli-1', '--county', '370102', '--org', SCHOOL, '--name', '示范中学网关', ...db()]);
    expect(r.code, r.err).toBe(0);
    const added = JSON.parse(r.out[0]!);
    expect(added).toMatchObject({ id: 'gw-cli-1', county: '370102', orgPath: SCHOOL, name: '示范中学网关' });
    expect(added.password.length).toBeGreaterThanOrEqual(16);
    expect(await store.verifyGateway('gw-cli-1', added.password)).not.toBeNull();
    // a second add does not silently reset the password
    const again = await run(['gateway', 'add', 'gw-cli-1', '--county', '370102', '--org', SCHOOL, ...db()], { XIAOAN_GATEWAY_PASSWORD: 'another-password' });
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/already registered.*--replace/);
    const list = await run(['gateway', 'list', '--org', '37/3701/370102', ...db()]);
    expect(list.out[0]).toMatch(/^id\s+county\s+orgPath/);
    expect(list.out.some((l) => l.startsWith('gw-cli-1') && l.includes(SCHOOL))).toBe(true);
    const rm = await run(['gateway', 'remove', 'gw-cli-1', ...db()]);
    expect(rm.code, rm.err).toBe(0);
    expect(await store.getGateway('gw-cli-1')).toBeNull();
    expect((await run(['gateway', 'remove', 'gw-cli-1', ...db()])).err).toMatch(/not registered/);
    const audit = await t.db.query<{ action: string }>("select action from audit_log where target = 'gw-cli-1' order by id");
    expect(audit.rows.map((a) => a.action)).toEqual(['gateway.add', 'gateway.remove']);
  });

  it('deadletters replay stores a set-aside message and record once, however often it is replayed', async () => {
    const now = Date.now();
    const topic = buildTopic({ county: '370102', gatewayId: 'gw-late', channel: 'readings' });
    const readings = [1, 2, 3].map((seq) => ({ seq, device: 'temp-1', metric: 'temperature', ts: now - 1000 + seq, value: 20 + seq }));
    // a message dead-lettered by an older version because its gateway was not registered yet
    await t.db.query(
      `insert into dead_letters (topic, gateway_id, org_path, reason, detail, payload, payload_bytes) values ($1, 'gw-late', '37/3701/370102', 'unknown_gateway', 'old', $2, 10)`,
      [topic, JSON.stringify({ v: 1, gateway: 'gw-late', sentAt: now, readings })],
    );
    // one record set aside alone (it was invalid, since fixed by hand, say)
    await store.recordDeadLetter({ topic, gatewayId: 'gw-late', orgPath: '37/3701/370102', reason: 'schema', detail: 'readings[0].x', payload: JSON.stringify({ seq: 9, device: 'temp-1', metric: 'temperature', ts: now, value: 9 }), unit: 'record' });
    const listed = await run(['deadletters', 'list', '--gateway', 'gw-late', ...db()]);
    expect(listed.out[0]).toMatch(/^id\s+received\s+reason/);
    expect(listed.out.filter((l) => l.includes('unknown_gateway'))).toHaveLength(1);

    // still unregistered: replay says what to do and stores nothing
    const early = await run(['deadletters', 'replay', '--gateway', 'gw-late', ...db()]);
    expect(early.code).toBe(1);
    expect(early.out.join('\n')).toMatch(/not registered centrally.*xiaoan gateway add gw-late/);
    expect((await run(['gateway', 'add', 'gw-late', '--county', '370102', '--org', '37/3701/370102', ...db()])).code).toBe(0);
    // meanwhile the gateway went on: the centre receipted the dead-lettered record, so its floor passed seq 9
    await store.sink.writeReadings([{ gatewayId: 'gw-late', floor: 20, readings: [{ seq: 20, device: 'temp-1', metric: 'temperature', ts: now, value: 20, quality: 'good' }] }]);

    // only rows not replayed yet, unless --again: here both were replayed (and failed) once
    const none = await run(['deadletters', 'replay', '--gateway', 'gw-late', ...db()]);
    expect(none.err).toMatch(/replayed 0 row/);
    const first = await run(['deadletters', 'replay', '--gateway', 'gw-late', '--again', '--json', ...db()]);
    expect(first.code, first.err).toBe(0);
    expect(first.out.map((l) => JSON.parse(l)).map((r) => [r.outcome, r.stored]).sort()).toEqual([['stored', 1], ['stored', 3]]);
    const second = await run(['deadletters', 'replay', '--gateway', 'gw-late', '--again', '--json', ...db()]);
    expect(second.out.map((l) => JSON.parse(l)).map((r) => [r.outcome, r.stored, r.duplicates]).sort()).toEqual([['duplicate', 0, 1], ['duplicate', 0, 3]]);
    const n = await t.db.query<{ n: number }>("select count(*)::int as n from readings where gateway_id = 'gw-late'");
    expect(n.rows[0]!.n).toBe(5);
    const marks = await t.db.query<{ replayed_at: Date | null; replay_result: string }>("select replayed_at, replay_result from dead_letters where gateway_id = 'gw-late'");
    expect(marks.rows.every((m) => m.replayed_at && m.replay_result.startsWith('duplicate'))).toBe(true);
    expect((await run(['deadletters', 'replay', ...db()])).err).toMatch(/choose what to replay/);
  });

  it('an unregistered gateway: no dead letter, no receipt; after `gateway add` its resend is stored and receipted', async () => {
    const broker = await startCentralBroker({ port: 0, store, serviceAccounts: [{ username: 'ingest', password: 'ingest-password' }] });
    const worker = await createIngestWorker({
      store, brokerUrl: broker.url, username: 'ingest', password: 'ingest-password', region: '3701', listeners: [], gatewayCacheMs: { unknown: 0 },
    });
    await worker.start();
    const svc = await mqtt.connectAsync(broker.url, { clientId: 'xiaoan-ingest-svc-test', username: 'ingest', password: 'ingest-password', protocolVersion: 4, reconnectPeriod: 0 });
    try {
      const topic = (channel: 'readings' | 'receipt') => buildTopic({ county: '370102', gatewayId: 'gw-new-school', channel });
      const got: Receipt[] = [];
      await svc.subscribeAsync(topic('receipt'), { qos: 1 });
      svc.on('message', (_t, p) => got.push(receiptSchema.parse(JSON.parse(p.toString()))));
      const body = JSON.stringify({ v: 1, gateway: 'gw-new-school', sentAt: Date.now(), floor: 40, readings: [40, 41].map((seq) => ({ seq, device: 'd', metric: 'temperature', ts: Date.now(), value: seq })) });
      await svc.publishAsync(topic('readings'), body, { qos: 1 });
      await until('awaiting registration', () => worker.stats().awaitingRegistration === 2);
      await new Promise((r) => setTimeout(r, 200));
      expect(got).toEqual([]);
      expect(worker.stats().deadLetters.total).toBe(0);
      expect((await t.db.query("select 1 from dead_letters where gateway_id = 'gw-new-school'")).rowCount).toBe(0);

      const add = await run(['gateway', 'add', 'gw-new-school', '--county', '370102', '--org', SCHOOL, ...db()], { XIAOAN_GATEWAY_PASSWORD: 'new-school-pw' });
      expect(add.code, add.err).toBe(0);
      await svc.publishAsync(topic('readings'), body, { qos: 1 }); // the gateway's resend
      await until('receipt', () => got.length > 0);
      expect(got[0]!.seqs).toEqual([[40, 41]]);
      expect((await t.db.query("select 1 from readings where gateway_id = 'gw-new-school'")).rowCount).toBe(2);
    } finally {
      await svc.endAsync(true);
      await worker.stop();
      await broker.close();
    }
  });
});
