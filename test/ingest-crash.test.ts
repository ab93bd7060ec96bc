// Rules on arrival, crash by crash: the ingest worker runs as a real process (`xiaoan ingest
// --config FILE`, rules on) against Mosquitto (persistent sessions) and PostgreSQL, and kills
// itself with SIGKILL at each step of the arrival path (XIAOAN_TEST_CRASH_AT, ingest/worker/
// crash-points.ts): after the alert commit, after the storage commit, before the receipt. A
// gateway (a plain MQTT client) sends one alarm event and readings that cross a threshold, and
// sends them again after the restart as a gateway does when no receipt came. After the restart:
// exactly one alert (and one `raised` outbox row) per triggering condition, every reading and
// event stored once, and a receipt naming every seq.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTopic, receiptSchema } from '../contract/index.ts';
import { openStore, type Store } from '../ingest/index.ts';
import { CRASH_POINTS, type CrashPoint } from '../ingest/worker/crash-points.ts';
import { createTestDatabase, type TestDatabase } from './support/databases.ts';
import { freePort, startMosquitto, type Peer } from './support/peers.ts';

const SCHOOL = '37/3701/370102/3737000001';
const GW = 'gw-crash-1';
const topic = (channel: 'readings' | 'events' | 'receipt') => buildTopic({ county: '370102', gatewayId: GW, channel });
const TEMP_RULE = `id: temp-over-50
name: { zh: 温度超过 50 度, en: Temperature above 50 }
category: emergency
severity: major
when: { metric: temperature, above: 50 }
`;

async function until<T>(what: string, fn: () => Promise<T> | T, ms = 30_000): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function startIngest(configFile: string, crashAt?: CrashPoint): { child: ChildProcess; out: () => string; exited: Promise<void> } {
  const env: NodeJS.ProcessEnv = { ...process.env, XIAOAN_LOG_LEVEL: 'warn' };
  delete env.XIAOAN_TEST_CRASH_AT;
  if (crashAt) env.XIAOAN_TEST_CRASH_AT = crashAt;
  const child = spawn(process.execPath, ['bin/xiaoan.js', 'ingest', '--config', configFile], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, out: () => out, exited };
}

describe('SIGKILL between the steps of the arrival path (PostgreSQL, Mosquitto, ingest as a process)', () => {
  let mosq: Peer;
  let dir: string;
  beforeAll(async () => {
    mosq = await startMosquitto({ persistence: true });
    dir = mkdtempSync(join(tmpdir(), 'xiaoan-crash-'));
    writeFileSync(join(dir, 'temp-over-50.yaml'), TEMP_RULE);
  });
  afterAll(async () => {
    await mosq?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.each(CRASH_POINTS)('killed %s: one alert per condition, every record stored once, receipted after restart', async (point) => {
    const tdb: TestDatabase = await createTestDatabase('postgres');
    let store: Store | null = null;
    let gw: MqttClient | null = null;
    let proc: ReturnType<typeof startIngest> | null = null;
    try {
      store = await openStore(tdb.db);
      await store.seedOrgTree({ demo: true });
      await store.registerGateway({ id: GW, county: '370102', orgPath: SCHOOL, name: 'crash', password: 'crash-gw-password' });
      const configFile = join(dir, `ingest-${point}.json`);
      writeFileSync(configFile, JSON.stringify({
        tier: 'ingest', region: '37', replica: `crash-${point}`,
        database: { url: tdb.url }, broker: { url: mosq.url, username: 'svc-ingest', password: 'x' },
        http: { port: await freePort(), host: '127.0.0.1' }, rules: { dirs: ['rules/library', dir] }, logLevel: 'warn',
      }));
      const started = (p: ReturnType<typeof startIngest>) => until('ingest start', () => /Xiaoan ingest: region/.test(p.out()) || p.child.exitCode !== null);

      gw = await mqtt.connectAsync(mosq.url, { clientId: `${GW}-${point}`, protocolVersion: 5, clean: true });
      const receipted = new Set<number>();
      gw.on('message', (_t, payload) => {
        const r = receiptSchema.parse(JSON.parse(payload.toString()));
        for (const [a, b] of r.seqs) for (let s = a; s <= b; s++) receipted.add(s);
      });
      await gw.subscribeAsync(topic('receipt'), { qos: 1 });
      const now = Date.now();
      const events = JSON.stringify({ v: 1, gateway: GW, sentAt: now, events: [{ seq: 1, device: 'smoke-1', type: 'smoke.alarm', ts: now, priority: 'alarm', drill: false, data: {} }] });
      const readings = JSON.stringify({ v: 1, gateway: GW, sentAt: now, readings: [20, 60, 61].map((value, i) => ({ seq: 2 + i, device: 'temp-1', metric: 'temperature', ts: now - 3000 + i * 1000, value, quality: 'good' })) });
      const send = async () => {
        await gw!.publishAsync(topic('events'), events, { qos: 1 });
        await gw!.publishAsync(topic('readings'), readings, { qos: 1 });
      };

      proc = startIngest(configFile, point);
      await started(proc);
      await send();
      await until(`the process to kill itself ${point}`, () => proc!.child.signalCode === 'SIGKILL', 30_000);
      expect(proc.out()).toContain(`XIAOAN_TEST_CRASH_AT=${point}`);

      proc = startIngest(configFile);
      await started(proc);
      expect(proc.child.exitCode).toBeNull();
      await send(); // the gateway's resend: no receipt came for these
      await until('receipts for seqs 1–4', () => [1, 2, 3, 4].every((s) => receipted.has(s)));

      const q = async (sql: string) => (await store!.db.query<{ k: string; n: number }>(sql)).rows;
      expect(await q(`select rule_id as k, count(*)::int as n from alerts group by rule_id order by rule_id`)).toEqual([{ k: 'smoke-alarm', n: 1 }, { k: 'temp-over-50', n: 1 }]);
      expect(await q(`select a.rule_id as k, count(*)::int as n from alert_outbox o join alerts a on a.id = o.alert_id where o.transition = 'raised' group by a.rule_id order by a.rule_id`))
        .toEqual([{ k: 'smoke-alarm', n: 1 }, { k: 'temp-over-50', n: 1 }]);
      expect(await q(`select seq::text as k, count(*)::int as n from readings where gateway_id = '${GW}' group by seq order by seq`)).toEqual([2, 3, 4].map((s) => ({ k: String(s), n: 1 })));
      expect(await q(`select seq::text as k, count(*)::int as n from events where gateway_id = '${GW}' group by seq`)).toEqual([{ k: '1', n: 1 }]);
    } finally {
      if (proc && proc.child.exitCode === null && proc.child.signalCode === null) {
        proc.child.kill('SIGTERM');
        await proc.exited;
      }
      gw?.end(true);
      await store?.close();
      await tdb.drop();
    }
  }, 120_000);
});
