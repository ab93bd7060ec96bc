// npm run bench:city [-- --minutes 10] [--quick] [--gateways 3000] [--rate 3]
//
// A city in simulation: 3,000 gateways (MQTT connections in a child process) reporting by
// exception through Mosquitto on 127.0.0.1:1883 — each a small batch every 2 s on average
// (`--rate` readings per second per gateway, default 3, so ~9,000 readings/s for the city) plus
// now and then an alarm event — into one ingest worker and PostgreSQL at 127.0.0.1:5432 (a
// throwaway database). Every 10 s it prints throughput, lag (readings: commit time − sentAt;
// alarms: listener time − event ts) and the worker's memory, so one sees whether it keeps up and
// whether memory stays flat. Ten minutes by default; `--minutes N` or `--quick` (1 minute) shorten it.
// The broker is a Mosquitto of its own (free port, queues of 1,000,000 messages) unless
// XIAOAN_BENCH_MQTT names one.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import pg from 'pg';
import { buildTopic, silentLogger } from '../contract/index.ts';

const args = process.argv.slice(2);
const num = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
// A Mosquitto of our own by default: the shared one on 1883 keeps Mosquitto's default queue of
// 1,000 messages per session and drops QoS 1 messages past it whenever the worker falls behind.
let MQTT_URL = process.env.XIAOAN_BENCH_MQTT ?? '';
const PG_ADMIN = process.env.XIAOAN_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';
// Jinan's districts (GB/T 2260)
const COUNTIES = ['370102', '370103', '370104', '370105', '370112', '370113', '370114', '370115', '370116', '370117', '370124', '370126'];
const METRICS = ['temperature', 'humidity', 'smoke_density', 'lel_percent', 'pressure'];

interface Plan { run: string; gateways: number; rate: number; seconds: number }
const gatewayId = (p: Plan, g: number) => `city-${p.run}-${g}`;
const countyOf = (g: number) => COUNTIES[g % COUNTIES.length]!;

// ------------------------------------------------------------------ the gateways (child process)
async function gatewaysProcess(p: Plan) {
  const clients: mqtt.MqttClient[] = [];
  for (let g = 0; g < p.gateways; g++) {
    clients.push(mqtt.connect(MQTT_URL, { protocolVersion: 5, clientId: `${gatewayId(p, g)}-${process.pid}`, clean: true, reconnectPeriod: 1000 }));
    if (g % 200 === 199) await new Promise((r) => setTimeout(r, 50)); // do not storm the broker
  }
  await Promise.all(clients.map((c) => (c.connected ? null : new Promise((r) => c.once('connect', r)))));
  const seq = new Array<number>(p.gateways).fill(0);
  const slots = 20; // each gateway reports once per 2 s on average, spread over 20 slots of 100 ms
  let slot = 0;
  let published = 0;
  const started = Date.now();
  process.send?.({ ready: true });
  const timer = setInterval(() => {
    if (Date.now() - started > p.seconds * 1000) {
      clearInterval(timer);
      // a clean end waits until the broker has acknowledged every publish
      void Promise.all(clients.map((c) => c.endAsync(false))).then(() => {
        process.send?.({ done: true, published });
        setTimeout(() => process.exit(0), 200);
      });
      return;
    }
    for (let g = slot; g < p.gateways; g += slots) {
      const now = Date.now();
      // by exception: how many points changed beyond their deadband in the last 2 s
      const n = Math.max(1, Math.round(p.rate * 2 * (0.5 + Math.random())));
      const readings = Array.from({ length: n }, () => {
        const s = seq[g]!++;
        return { seq: s, device: `dev-${s % 16}`, metric: METRICS[s % METRICS.length]!, ts: now, value: Math.round(Math.random() * 1000) / 10, quality: 'good' };
      });
      const c = clients[g]!;
      c.publish(buildTopic({ county: countyOf(g), gatewayId: gatewayId(p, g), channel: 'readings' }), JSON.stringify({ v: 1, gateway: gatewayId(p, g), sentAt: now, readings }), { qos: 1 });
      published += n;
      if (Math.random() < 0.001) {
        const s = seq[g]!++;
        c.publish(buildTopic({ county: countyOf(g), gatewayId: gatewayId(p, g), channel: 'events' }), JSON.stringify({
          v: 1, gateway: gatewayId(p, g), sentAt: now,
          events: [{ seq: s, device: 'smoke-1', type: 'smoke.alarm', ts: now, priority: 'alarm', drill: true, data: {} }],
        }), { qos: 1 });
      }
    }
    slot = (slot + 1) % slots;
  }, 100);
}

// ------------------------------------------------------------------ the centre
async function main() {
  const quick = args.includes('--quick');
  const plan: Plan = {
    run: randomBytes(3).toString('hex'),
    gateways: num('gateways', 3000),
    rate: num('rate', 3),
    seconds: Math.round(num('minutes', quick ? 1 : 10) * 60),
  };
  const log = (s: string) => process.stderr.write(s + '\n');
  const { startMosquitto } = await import('../test/support/peers.ts');
  const mosquitto = MQTT_URL ? null : await startMosquitto();
  if (mosquitto) MQTT_URL = mosquitto.url;
  log(`bench:city — ${plan.gateways} gateways by exception, ~${plan.rate} readings/s each (~${(plan.gateways * plan.rate).toLocaleString()}/s), ${plan.seconds} s; Mosquitto ${MQTT_URL}, PostgreSQL ${PG_ADMIN.replace(/\/\/[^@]*@/, '//')}`);
  const { openStore, createIngestWorker } = await import('../ingest/index.ts');
  const dbName = `xiaoan_city_${plan.run}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  const store = await openStore(PG_ADMIN.replace(/\/[^/]*$/, `/${dbName}`), { log: silentLogger });
  let child: ReturnType<typeof spawn> | undefined;
  try {
    await store.db.query(
      `insert into gateways (id, org_path, county, name, secret_hash)
       select 'city-' || $1 || '-' || g, '37/3701/' || c || '/' || (3701000000 + g)::text, c, 'gw ' || g, 'scrypt$bench'
         from generate_series(0, $2 - 1) g, lateral (select ($3::text[])[1 + g % array_length($3::text[], 1)] as c) x`,
      [plan.run, plan.gateways, COUNTIES],
    );
    const alarmLags: number[] = [];
    const worker = await createIngestWorker({
      store, brokerUrl: MQTT_URL, username: 'bench', password: 'bench', region: '3701', shareGroup: `city-${plan.run}`,
      log: silentLogger,
      listeners: [{ name: 'alarm-latency', async onStored(b) { for (const e of b.events) alarmLags.push(Date.now() - e.ts); } }],
    });
    await worker.start();
    child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--gateways-process', JSON.stringify(plan), MQTT_URL], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const done = new Promise<{ published: number }>((resolve) => child!.on('message', (m: { done?: boolean; published?: number }) => m.done && resolve({ published: m.published ?? 0 })));
    await new Promise<void>((resolve) => child!.on('message', (m: { ready?: boolean }) => m.ready && resolve()));
    log(`  ${plan.gateways} gateways connected`);
    const started = Date.now();
    let last = { t: started, stored: 0 };
    const samples: Array<{ t: number; rps: number; lag: number; heapMb: number; rssMb: number }> = [];
    const report = () => {
      const s = worker.stats();
      const now = Date.now();
      const rps = ((s.stored.readings - last.stored) * 1000) / Math.max(1, now - last.t);
      last = { t: now, stored: s.stored.readings };
      const mem = process.memoryUsage();
      const sorted = [...alarmLags].sort((a, b) => a - b);
      const sample = { t: Math.round((now - started) / 1000), rps: Math.round(rps), lag: s.lagMs ?? 0, heapMb: Math.round(mem.heapUsed / 1e6), rssMb: Math.round(mem.rss / 1e6) };
      samples.push(sample);
      log(`  t=${String(sample.t).padStart(4)} s  stored ${Math.round(rps).toLocaleString().padStart(7)} readings/s  lag ${String(sample.lag).padStart(6)} ms  ` +
        `pending ${String(s.pendingRecords).padStart(6)}  connects ${s.lanes.readings.connects}  heap ${sample.heapMb} MB  rss ${sample.rssMb} MB  ` +
        `alarms ${sorted.length} (p50 ${sorted[Math.floor(sorted.length / 2)] ?? '-'} ms, max ${sorted[sorted.length - 1] ?? '-'} ms)`);
    };
    const timer = setInterval(report, 10_000);
    const { published } = await done;
    // let the tail drain
    const drainUntil = Date.now() + 30_000;
    while (worker.stats().stored.readings < published && Date.now() < drainUntil) await new Promise((r) => setTimeout(r, 100));
    clearInterval(timer);
    report();
    const s = worker.stats();
    await worker.stop();
    const seconds = (Date.now() - started) / 1000;
    const steady = samples.slice(1, -1);
    const heapFirst = steady[0]?.heapMb ?? samples[0]?.heapMb ?? 0;
    const heapLast = steady[steady.length - 1]?.heapMb ?? heapFirst;
    if (s.stored.readings + s.duplicates.readings < published) log(`  ! ${(published - s.stored.readings).toLocaleString()} readings not stored within 30 s of the end (still queued at the broker, or dropped by it)`);
    log(`published ${published.toLocaleString()} readings, stored ${s.stored.readings.toLocaleString()} (duplicates ${s.duplicates.readings}, dead letters ${s.deadLetters.total}) in ${seconds.toFixed(0)} s; ` +
      `heap ${heapFirst} → ${heapLast} MB over the steady part`);
    console.log(JSON.stringify({
      gateways: plan.gateways, seconds: Math.round(seconds), published, stored: s.stored.readings,
      stored_rps: Math.round(s.stored.readings / plan.seconds), max_lag_ms: Math.max(0, ...samples.map((x) => x.lag)),
      alarm_p50_ms: [...alarmLags].sort((a, b) => a - b)[Math.floor(alarmLags.length / 2)] ?? null,
      heap_first_mb: heapFirst, heap_last_mb: heapLast,
    }));
  } finally {
    if (child && child.exitCode === null) child.kill();
    await mosquitto?.close();
    await store.close();
    await admin.query(`drop database if exists ${dbName} with (force)`);
    await admin.end();
  }
}

if (args[0] === '--gateways-process') {
  MQTT_URL = args[2]!;
  gatewaysProcess(JSON.parse(args[1]!) as Plan).catch((e) => {
    console.error('gateways failed:', e);
    process.exit(1);
  });
} else {
  main().then(() => process.exit(0), (e) => {
    console.error('bench:city failed:', (e as Error).message);
    process.exit(1);
  });
}
