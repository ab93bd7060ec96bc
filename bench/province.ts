// npm run bench:province [-- --quick] [--gateways N] [--no-rules]
//
// Shandong's traffic shape, scaled down to one machine: many simulated gateways spread over the
// 16 cities' region topics publish through Mosquitto (127.0.0.1:1883) into one ingest worker
// (region 37, MQTT 5 shared subscription) that stores into PostgreSQL (127.0.0.1:5432) and runs
// the rule library on every stored record, as a production worker does.
//
//   Phase A — the province's per-gateway rate, scaled by the number of gateways: does one worker
//             keep up, with what lag, exactly once?
//   Phase B — the same gateways and message shape (~3 readings a message, by exception), sent as
//             fast as the worker stores them: what one worker sustains. This is the per-worker
//             figure docs/scaling.md divides the province's load by; the run checks it against
//             ASSUMED_WORKER_RPS below.
//
// The simulated gateways run in a child process, so the worker has the parent's thread to itself.
// Last line: JSON {"shape_rps", "shape_lag_p95_ms", "worker_rps", "worker_msgs_per_s",
// "assumed_worker_rps", "ok", "bytes_per_row", …}.
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { hostname, loadavg, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import pg from 'pg';
import { buildTopic, SHANDONG_CITIES, silentLogger, type DeviceEvent, type Reading } from '../contract/index.ts';
import { createIngestWorker, openStore, type BatchListener, type IngestWorker, type Store } from '../ingest/index.ts';
import { compileRules, createRuleEngine, LIBRARY_DIR, type RuleEngine } from '../rules/index.ts';

import { ASSUMED_WORKER_RPS, DEVICES_PER_GATEWAY, PROVINCE, PROVINCE_READINGS_S, READINGS_PER_GATEWAY_S } from './province-model.ts';

const METRICS = ['temperature', 'humidity', 'smoke_density', 'gas_lel', 'water_pressure'] as const;
const EVENT_TYPES = ['visitor.checkin', 'gate.opened', 'onvif.motion', 'gate.closed'] as const;

interface GatewaySpec { id: string; county: string; orgPath: string }
type ToChild =
  | { kind: 'start'; brokerUrl: string; gateways: GatewaySpec[]; runId: string }
  | { kind: 'shape'; seconds: number }
  | { kind: 'credit'; readings: number }
  | { kind: 'stop' };
type FromChild =
  | { kind: 'ready'; connections: number }
  | { kind: 'progress'; readings: number; events: number; messages: number; acked: number; cpuMs: number }
  | { kind: 'done'; readings: number; events: number; messages: number; acked: number; cpuMs: number }
  | { kind: 'error'; message: string };

// ================================================================================================
// child: the simulated gateways
// ================================================================================================
async function publisherMain(): Promise<void> {
  const send = (m: FromChild) => process.send!(m);
  let clients: mqtt.MqttClient[] = [];
  let gateways: Array<GatewaySpec & { seq: number; readingsTopic: string; eventsTopic: string; client: mqtt.MqttClient; carry: number }> = [];
  let published = { readings: 0, events: 0, messages: 0, acked: 0 };
  let credit = 0;
  let mode: 'idle' | 'shape' | 'capacity' = 'idle';
  let rr = 0;
  const cpu0 = process.cpuUsage();
  const cpuMs = () => {
    const c = process.cpuUsage(cpu0);
    return (c.user + c.system) / 1000;
  };
  const rand = mulberry32(7);

  const batch = (g: (typeof gateways)[number], n: number, now: number) => {
    const readings: Reading[] = [];
    for (let i = 0; i < n; i++) {
      const device = `d-${Math.floor(rand() * DEVICES_PER_GATEWAY)}`;
      const metric = METRICS[Math.floor(rand() * METRICS.length)]!;
      readings.push({ seq: ++g.seq, device, metric, ts: now - Math.floor(rand() * 1000), value: Math.round(rand() * 1000) / 100, quality: 'good' });
    }
    return JSON.stringify({ v: 1, gateway: g.id, sentAt: now, readings });
  };
  const publish = (g: (typeof gateways)[number], topic: string, payload: string, records: number, kind: 'readings' | 'events') => {
    published[kind] += records;
    published.messages++;
    g.client.publish(topic, payload, { qos: 1 }, (err) => {
      if (!err) published.acked++;
    });
  };

  process.on('message', async (raw: ToChild) => {
    try {
      if (raw.kind === 'start') {
        const nConn = Math.min(raw.gateways.length, 200);
        clients = await Promise.all(
          Array.from({ length: nConn }, (_, i) =>
            mqtt.connectAsync(raw.brokerUrl, { clientId: `bench-province-${raw.runId}-pub-${i}`, protocolVersion: 5, clean: true, reconnectPeriod: 1000 }),
          ),
        );
        gateways = raw.gateways.map((g, i) => ({
          ...g,
          seq: 0,
          carry: 0,
          client: clients[i % nConn]!,
          readingsTopic: buildTopic({ county: g.county, gatewayId: g.id, channel: 'readings' }),
          eventsTopic: buildTopic({ county: g.county, gatewayId: g.id, channel: 'events' }),
        }));
        send({ kind: 'ready', connections: nConn });
      } else if (raw.kind === 'shape') {
        // Each gateway flushes once a second at its own phase; readings per flush follow the
        // province's average (Poisson around READINGS_PER_GATEWAY_S), events one a minute.
        mode = 'shape';
        const tickMs = 50;
        const ticksPerFlush = (PROVINCE.flushIntervalS * 1000) / tickMs;
        const end = Date.now() + raw.seconds * 1000;
        let tick = 0;
        await new Promise<void>((resolve) => {
          const timer = setInterval(() => {
            const now = Date.now();
            if (now >= end || mode !== 'shape') {
              clearInterval(timer);
              resolve();
              return;
            }
            for (let i = tick % ticksPerFlush; i < gateways.length; i += ticksPerFlush) {
              const g = gateways[i]!;
              const n = poisson(READINGS_PER_GATEWAY_S * PROVINCE.flushIntervalS, rand);
              if (n > 0) publish(g, g.readingsTopic, batch(g, n, now), n, 'readings');
              if (rand() < (PROVINCE.eventsPerGatewayPerMinute / 60) * PROVINCE.flushIntervalS) {
                const ev: DeviceEvent = { seq: ++g.seq, device: `d-${Math.floor(rand() * DEVICES_PER_GATEWAY)}`, type: EVENT_TYPES[Math.floor(rand() * EVENT_TYPES.length)]!, ts: now, priority: 'normal', drill: false, data: {} };
                publish(g, g.eventsTopic, JSON.stringify({ v: 1, gateway: g.id, sentAt: now, events: [ev] }), 1, 'events');
              }
            }
            tick++;
          }, tickMs);
        });
        mode = 'idle';
        send({ kind: 'done', ...published, cpuMs: cpuMs() });
      } else if (raw.kind === 'credit') {
        // Capacity: publish the same message shape as fast as credit (granted by the parent from
        // what the worker has stored) allows, round robin over the gateways.
        credit += raw.readings;
        if (mode === 'capacity') return;
        mode = 'capacity';
        const pump = () => {
          if (mode !== 'capacity') return;
          const now = Date.now();
          let sent = 0;
          while (credit > 0 && sent < 2000) {
            const g = gateways[rr++ % gateways.length]!;
            const n = Math.max(1, poisson(READINGS_PER_GATEWAY_S * PROVINCE.flushIntervalS, rand));
            publish(g, g.readingsTopic, batch(g, n, now), n, 'readings');
            credit -= n;
            sent += n;
          }
          setImmediate(pump);
        };
        pump();
      } else if (raw.kind === 'stop') {
        mode = 'idle';
        const deadline = Date.now() + 10_000;
        while (published.acked < published.messages && Date.now() < deadline) await sleep(20);
        send({ kind: 'done', ...published, cpuMs: cpuMs() });
        await Promise.all(clients.map((c) => c.endAsync().catch(() => {})));
        process.exit(0);
      }
    } catch (e) {
      send({ kind: 'error', message: (e as Error).message });
    }
  });
  setInterval(() => send({ kind: 'progress', ...published, cpuMs: cpuMs() }), 250).unref();
}

// ================================================================================================
// parent: the ingest worker, the database, the measurements
// ================================================================================================
interface Args { quick: boolean; gateways: number; rules: boolean; brokerUrl: string; pgAdmin: string; shapeS: number; capacityS: number; window: number; ownBroker: boolean }

function parseCli(argv: string[]): Args {
  const quick = argv.includes('--quick');
  const num = (flag: string, d: number) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? Number(argv[i + 1]) : d;
  };
  const str = (flag: string, d: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? String(argv[i + 1]) : d;
  };
  return {
    quick,
    gateways: num('--gateways', quick ? 800 : 2000),
    rules: !argv.includes('--no-rules'),
    brokerUrl: str('--broker', 'mqtt://127.0.0.1:1883'),
    pgAdmin: str('--pg', process.env.XIAOAN_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres'),
    shapeS: num('--shape-seconds', quick ? 12 : 60),
    capacityS: num('--capacity-seconds', quick ? 20 : 60),
    // Readings in flight. Mosquitto's default max_queued_messages (1,000 per subscriber beyond
    // ~20 in flight) silently drops QoS 1 messages past it — the exactly-once check catches that —
    // so against the shared 127.0.0.1:1883 the window stays under ~1,000 messages. --own-broker
    // starts a Mosquitto configured as docs/scaling.md asks (deep queues) and opens the window.
    ownBroker: argv.includes('--own-broker'),
    window: num('--window', argv.includes('--own-broker') ? 40_000 : 2_500),
  };
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function parentMain(): Promise<void> {
  const args = parseCli(process.argv.slice(2));
  const runId = randomBytes(3).toString('hex');
  const line = (s = '') => process.stdout.write(s + '\n');
  line(`校安 bench:province — Shandong's traffic shape on one machine (${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}, ${hostname()})`);
  line(`model: ${fmt(PROVINCE.gateways)} gateways × ${DEVICES_PER_GATEWAY} devices; by exception every ${PROVINCE.exceptionIntervalS} s + integrity every ${PROVINCE.integrityIntervalS / 60} min ` +
    `→ ${READINGS_PER_GATEWAY_S.toFixed(2)} readings/s a gateway, ${fmt(PROVINCE_READINGS_S)} readings/s for the province`);
  const scale = args.gateways / PROVINCE.gateways;
  line(`scaled: ${fmt(args.gateways)} gateways (${(scale * 100).toFixed(1)} % of the province) over ${SHANDONG_CITIES.length} cities; 1 ingest worker${args.rules ? ' with the rule library' : ' (rules off)'}; broker ${args.brokerUrl}`);

  let ownBroker: ChildProcess | undefined;
  if (args.ownBroker) {
    const started = await startOwnMosquitto();
    ownBroker = started.proc;
    args.brokerUrl = started.url;
    line(`own broker: Mosquitto on ${started.url} with max_queued_messages 1000000 (not the shared 1883)`);
  }
  // database
  const dbName = `xiaoan_bench_province_${runId}`;
  const admin = new pg.Client({ connectionString: args.pgAdmin });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  const dbUrl = args.pgAdmin.replace(/\/[^/]*$/, `/${dbName}`);
  let store: Store | undefined;
  let worker: IngestWorker | undefined;
  let child: ChildProcess | undefined;
  try {
    store = await openStore(dbUrl, { log: silentLogger });
    await store.seedOrgTree();
    const gateways = gatewaysFor(args.gateways, runId);
    await registerGateways(store, dbUrl, gateways);

    // the rule library, evaluated on every stored record, state per site
    let engine: RuleEngine | undefined;
    const listeners: BatchListener[] = [];
    let ruleEvaluations = 0;
    if (args.rules) {
      const { readdir, readFile } = await import('node:fs/promises');
      const files = (await readdir(LIBRARY_DIR)).filter((f) => f.endsWith('.yaml'));
      const docs = await Promise.all(files.map(async (f) => ({ file: f, text: await readFile(LIBRARY_DIR + f, 'utf8') })));
      const set = compileRules(docs);
      if (set.errors.length) line(`rules: ${set.errors.length} compile errors ignored (${set.errors[0]!.message})`);
      engine = createRuleEngine(set.rules, { calendars: set.calendars });
      listeners.push({
        name: 'rules',
        async onStored(b) {
          const ctx = { gatewayId: b.gateway.id, orgPath: b.gateway.orgPath };
          for (const r of b.readings) engine!.onReading(r, ctx);
          for (const e of b.events) engine!.onEvent(e, ctx);
          ruleEvaluations += b.readings.length + b.events.length;
        },
      });
      line(`rules: ${set.rules.length} rules from rules/library`);
    }

    worker = await createIngestWorker({
      store,
      brokerUrl: args.brokerUrl,
      username: 'bench',
      password: 'bench',
      region: '37',
      shareGroup: `xiaoan-bench-${runId}`,
      clientId: `bench-province-${runId}-worker`,
      listeners,
      log: silentLogger,
    });
    await worker.start();

    // the simulated gateways
    child = fork(fileURLToPath(import.meta.url), ['--publisher'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let last: FromChild & { kind: 'progress' | 'done' } = { kind: 'progress', readings: 0, events: 0, messages: 0, acked: 0, cpuMs: 0 };
    const waiters: Array<(m: FromChild) => void> = [];
    child.on('message', (m: FromChild) => {
      if (m.kind === 'progress' || m.kind === 'done') last = m;
      if (m.kind === 'error') line(`publisher error: ${m.message}`);
      for (const w of waiters.splice(0)) w(m);
    });
    const next = (kind: FromChild['kind']) =>
      new Promise<FromChild>((resolve) => {
        const wait = (m: FromChild) => (m.kind === kind ? resolve(m) : waiters.push(wait));
        waiters.push(wait);
      });
    child.send({ kind: 'start', brokerUrl: args.brokerUrl, gateways, runId } satisfies ToChild);
    const ready = (await next('ready')) as { connections: number };
    line(`publishers: ${ready.connections} MQTT connections carrying ${fmt(gateways.length)} gateways (QoS 1)`);
    const stored = () => worker!.stats().stored.readings + worker!.stats().stored.events;

    // ---- phase A: the province's shape at its own rate ----
    line('');
    line(`phase A — ${args.shapeS} s at the province's per-gateway rate (expected ${fmt(READINGS_PER_GATEWAY_S * args.gateways)} readings/s)`);
    const cpuA = process.cpuUsage();
    const tA = Date.now();
    const lags: number[] = [];
    const sampler = setInterval(() => {
      const l = worker!.stats().lagMs;
      if (l !== null) lags.push(l);
    }, 200);
    child.send({ kind: 'shape', seconds: args.shapeS } satisfies ToChild);
    const doneA = (await next('done')) as Extract<FromChild, { kind: 'done' }>;
    const sentA = doneA.readings + doneA.events;
    const caughtUp = await settle(() => stored(), sentA, 30_000);
    clearInterval(sampler);
    const elapsedA = (Date.now() - tA) / 1000;
    const cpuUsedA = cpuOf(cpuA, Date.now() - tA);
    const shapeRps = doneA.readings / args.shapeS;
    lags.sort((a, b) => a - b);
    const p = (q: number) => (lags.length ? lags[Math.min(lags.length - 1, Math.floor(q * lags.length))]! : NaN);
    line(`  published ${fmt(doneA.readings)} readings + ${fmt(doneA.events)} events in ${fmt(doneA.messages)} messages (${(doneA.readings / Math.max(1, doneA.messages - doneA.events)).toFixed(2)} readings a message)`);
    const storedA = stored();
    const lostA = caughtUp === 'stalled' ? sentA - storedA : 0;
    line(`  stored    ${fmt(storedA)} records; kept up: ${caughtUp === 'done' ? 'yes' : 'NO'} (${elapsedA.toFixed(1)} s wall)` +
      (caughtUp === 'stalled' ? `; ${fmt(lostA)} records never arrived — dropped by the broker's per-subscriber queue while the worker lagged (Mosquitto's max_queued_messages, default 1,000; docs/scaling.md)` : ''));
    line(`  rate      ${fmt(shapeRps)} readings/s = the province's ${fmt(PROVINCE_READINGS_S)} × ${(scale * 100).toFixed(1)} %`);
    line(`  lag       p50 ${fmt(p(0.5))} ms, p95 ${fmt(p(0.95))} ms, max ${fmt(p(1))} ms (sentAt → committed)`);
    line(`  worker CPU ${(cpuUsedA * 100).toFixed(0)} % of one core at this rate`);

    // ---- phase B: the same shape as fast as one worker stores it ----
    line('');
    line(`phase B — ${args.capacityS} s of the same message shape as fast as the worker stores it (credit window ${fmt(args.window)} readings)`);
    const WINDOW = args.window;
    const commitsB0 = worker.stats().commits.readings;
    const commitMs: number[] = [];
    const baseStored = worker.stats().stored.readings;
    const basePublished = last.readings;
    child.send({ kind: 'credit', readings: WINDOW } satisfies ToChild);
    let granted = WINDOW;
    const samples: Array<{ t: number; stored: number }> = [];
    const cpuB = process.cpuUsage();
    const tB = Date.now();
    while (Date.now() - tB < args.capacityS * 1000) {
      await sleep(25);
      const s = worker.stats().stored.readings - baseStored;
      const want = s + WINDOW - granted;
      if (want > 0) {
        child.send({ kind: 'credit', readings: want } satisfies ToChild);
        granted += want;
      }
      if (samples.length === 0 || Date.now() - samples[samples.length - 1]!.t >= 1000) samples.push({ t: Date.now(), stored: s });
      const lc = worker.stats().lastCommit;
      if (lc) commitMs.push(lc.ms);
    }
    const cpuUsedB = cpuOf(cpuB, Date.now() - tB);
    child.send({ kind: 'stop' } satisfies ToChild);
    const doneB = (await next('done')) as Extract<FromChild, { kind: 'done' }>;
    const sentTotal = doneB.readings + doneB.events;
    const caughtUpB = await settle(() => stored(), sentTotal - lostA, 30_000);
    const lostB = sentTotal - stored() - lostA;
    // steady state: drop the first 2 s of ramp-up
    const steady = samples.filter((s) => s.t - tB >= 2000);
    const workerRps = steady.length >= 2 ? (steady[steady.length - 1]!.stored - steady[0]!.stored) / ((steady[steady.length - 1]!.t - steady[0]!.t) / 1000) : NaN;
    const readingsPerMsg = (doneB.readings - basePublished) / Math.max(1, doneB.messages - doneA.messages);
    const perSecond = steady.slice(1).map((s, i) => (s.stored - steady[i]!.stored) / ((s.t - steady[i]!.t) / 1000));
    line(`  stored    ${fmt(workerRps)} readings/s steady (${fmt(workerRps / readingsPerMsg)} messages/s of ${readingsPerMsg.toFixed(2)} readings), ` +
      `per-second min ${fmt(Math.min(...perSecond))} / max ${fmt(Math.max(...perSecond))}`);
    const commitsB = worker.stats().commits.readings - commitsB0;
    commitMs.sort((a, b) => a - b);
    line(`  commits   ${fmt(commitsB)} (${fmt((doneB.readings - basePublished) / Math.max(1, commitsB))} readings each, median ${fmt(commitMs[Math.floor(commitMs.length / 2)] ?? NaN)} ms)`);
    line(`  worker CPU ${(cpuUsedB * 100).toFixed(0)} % of one core; publishers ${((doneB.cpuMs - doneA.cpuMs) / 1000 / ((Date.now() - tB) / 1000) * 100).toFixed(0)} %; rule evaluations ${fmt(ruleEvaluations)}`);

    // ---- exactly once, and what a row costs on disk ----
    const db = new pg.Client({ connectionString: dbUrl });
    await db.connect();
    const counts = await db.query<{ readings: string; distinct_keys: string; events: string }>(
      `select (select count(*) from readings) as readings,
              (select count(*) from (select distinct gateway_id, seq from readings) k) as distinct_keys,
              (select count(*) from events) as events`,
    );
    const c = counts.rows[0]!;
    const sizeOf = async (table: string) => {
      const r = await db.query<{ bytes: string | null }>(
        `select case when c.relkind = 'p'
                     then (select sum(pg_total_relation_size(relid)) from pg_partition_tree(c.oid))
                     else pg_total_relation_size(c.oid) end as bytes
           from pg_class c where c.oid = $1::regclass`, [table]);
      return Number(r.rows[0]?.bytes ?? 0);
    };
    const rawBytes = await sizeOf('readings');
    const rollupBytes = (await sizeOf('readings_1m')) + (await sizeOf('readings_1h'));
    await db.end();
    const rows = Number(c.readings);
    const bytesPerRow = rows ? rawBytes / rows : NaN;
    const rollupBytesPerRow = rows ? rollupBytes / rows : NaN;
    // No duplicate ever; in phase B (credit-paced) nothing may be missing either.
    const noDuplicates = Number(c.distinct_keys) === rows && rows + Number(c.events) === stored();
    const exactlyOnce = noDuplicates && lostB === 0;
    const deadLetters = worker.stats().deadLetters.total;
    line('');
    line(`database: ${fmt(rows)} readings (${fmt(Number(c.distinct_keys))} distinct (gateway, seq)), ${fmt(Number(c.events))} events; ` +
      `published ${fmt(doneB.readings)} readings, ${fmt(doneB.events)} events; duplicates: ${noDuplicates ? 'none' : 'YES'}; ` +
      `missing in phase B: ${fmt(lostB)}${lostA > 0 ? `, in phase A: ${fmt(lostA)} (broker queue overflow)` : ''} → exactly once: ${exactlyOnce ? 'yes' : 'NO'}; dead letters ${deadLetters}`);
    line(`storage: ${bytesPerRow.toFixed(0)} bytes a reading in PostgreSQL (heap + indexes, uncompressed, no TimescaleDB here) + ${rollupBytesPerRow.toFixed(0)} bytes of 1-minute/1-hour rollups a reading (this shape is sparse: most readings open their own rollup rows)`);

    // What one worker process can do is its CPU cost per reading (the database on this shared
    // 2-core box is the end-to-end limit, not the worker): readings/s per core of worker CPU.
    const usPerReading = (cpuUsedB * 1e6) / workerRps;
    const workerCeiling = workerRps / cpuUsedB;
    const ok = caughtUpB === 'done' && exactlyOnce && workerCeiling >= ASSUMED_WORKER_RPS;
    const workersNeeded = Math.ceil(PROVINCE_READINGS_S / ASSUMED_WORKER_RPS / 0.5);
    line('');
    line(`worker cost: ${usPerReading.toFixed(0)} µs of worker CPU a reading (MQTT, JSON, validation, COPY, rules) → one worker core sustains ${fmt(workerCeiling)} readings/s`);
    line(`per-worker figure: ${fmt(ASSUMED_WORKER_RPS)} readings/s assumed in docs/scaling.md (one core, province shape) → ${workerCeiling >= ASSUMED_WORKER_RPS ? 'holds' : 'DOES NOT HOLD'} (measured ceiling ${fmt(workerCeiling)})`);
    line(`end to end on this machine the database is the limit: ${fmt(workerRps)} readings/s with PostgreSQL on the same 2 cores (load ${loadavg()[0]!.toFixed(1)})`);
    line(`province: ${fmt(PROVINCE_READINGS_S)} readings/s ÷ ${fmt(ASSUMED_WORKER_RPS)} at 50 % load → ${workersNeeded} worker cores`);
    line(`limits on this machine (FIELD-NOTES): PostgreSQL COPY ~1.2M rows/s, Mosquitto QoS 0 ~144k msg/s`);
    line(JSON.stringify({
      gateways: args.gateways,
      shape_rps: Math.round(shapeRps),
      shape_kept_up: caughtUp === 'done',
      shape_lost_at_broker: lostA,
      shape_lag_p95_ms: Math.round(p(0.95)),
      worker_rps: Math.round(workerRps),
      worker_cpu: Number(cpuUsedB.toFixed(3)),
      worker_us_per_reading: Math.round(usPerReading),
      worker_ceiling_rps: Math.round(workerCeiling),
      worker_msgs_per_s: Math.round(workerRps / readingsPerMsg),
      readings_per_message: Number(readingsPerMsg.toFixed(2)),
      assumed_worker_rps: ASSUMED_WORKER_RPS,
      province_rps: Math.round(PROVINCE_READINGS_S),
      worker_cores_planned: workersNeeded,
      exactly_once: exactlyOnce,
      bytes_per_row: Math.round(bytesPerRow),
      rollup_bytes_per_row: Math.round(rollupBytesPerRow),
      load: Number(loadavg()[0]!.toFixed(1)),
      rules: args.rules,
      ok,
    }));
    process.exitCode = ok ? 0 : 1;
  } finally {
    child?.kill();
    await worker?.stop().catch(() => {});
    ownBroker?.kill();
    await store?.close().catch(() => {});
    await admin.query(`drop database if exists ${dbName} with (force)`).catch(() => {});
    await admin.end();
  }
}

/** Gateways spread evenly over the 16 cities, two counties each, one school per gateway. */
function gatewaysFor(n: number, runId: string): GatewaySpec[] {
  const out: GatewaySpec[] = [];
  for (let i = 0; i < n; i++) {
    const city = SHANDONG_CITIES[i % SHANDONG_CITIES.length]!.code;
    const county = `${city}0${2 + (Math.floor(i / SHANDONG_CITIES.length) % 2)}`;
    const school = `37${String(10_000_000 + i).slice(-8)}`;
    out.push({ id: `gwb-${runId}-${i}`, county, orgPath: `37/${city}/${county}/${school}` });
  }
  return out;
}

/** One gateway through the store (a real password hash), the rest in one statement with the same hash. */
async function registerGateways(store: Store, dbUrl: string, gateways: GatewaySpec[]): Promise<void> {
  const first = gateways[0]!;
  await store.registerGateway({ id: first.id, county: first.county, orgPath: first.orgPath, password: 'bench-password' });
  const db = new pg.Client({ connectionString: dbUrl });
  await db.connect();
  const rest = gateways.slice(1);
  await db.query(
    `insert into gateways (id, org_path, county, name, secret_hash)
     select g.id, g.org_path, g.county, g.id, (select secret_hash from gateways where id = $1)
       from unnest($2::text[], $3::text[], $4::text[]) as g(id, org_path, county)`,
    [first.id, rest.map((g) => g.id), rest.map((g) => g.orgPath), rest.map((g) => g.county)],
  );
  await db.end();
}

/** A Mosquitto of our own on a free port, with queues deep enough for the capacity phase. */
async function startOwnMosquitto(): Promise<{ proc: ChildProcess; url: string }> {
  const { createServer } = await import('node:net');
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { spawn } = await import('node:child_process');
  const port = await new Promise<number>((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const p = (srv.address() as { port: number }).port;
      srv.close(() => resolve(p));
    });
  });
  const dir = mkdtempSync(`${tmpdir()}/xiaoan-bench-mosquitto-`);
  writeFileSync(`${dir}/mosquitto.conf`, [
    `listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false',
    'max_queued_messages 1000000', 'max_inflight_messages 0', 'log_dest none', '',
  ].join('\n'));
  const proc = spawn('mosquitto', ['-c', `${dir}/mosquitto.conf`], { stdio: 'ignore' });
  const url = `mqtt://127.0.0.1:${port}`;
  for (let i = 0; i < 50; i++) {
    try {
      const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 500 });
      await c.endAsync();
      return { proc, url };
    } catch {
      await sleep(100);
    }
  }
  proc.kill();
  throw new Error(`mosquitto did not start on ${url}`);
}

function cpuOf(start: NodeJS.CpuUsage, wallMs: number): number {
  const c = process.cpuUsage(start);
  return (c.user + c.system) / 1000 / wallMs;
}

/** Wait until `count()` reaches `target` ('done'), stops growing for 5 s ('stalled') or time runs out ('timeout'). */
async function settle(count: () => number, target: number, timeoutMs: number): Promise<'done' | 'stalled' | 'timeout'> {
  const end = Date.now() + timeoutMs;
  let last = count();
  let since = Date.now();
  while (count() < target) {
    if (Date.now() > end) return 'timeout';
    if (count() !== last) {
      last = count();
      since = Date.now();
    } else if (Date.now() - since > 5000) return 'stalled';
    await sleep(50);
  }
  return 'done';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function poisson(lambda: number, rand: () => number): number {
  const l = Math.exp(-lambda);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= rand();
  } while (p > l);
  return k - 1;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

if (process.argv.includes('--publisher')) await publisherMain();
else if (process.argv[1] && fileURLToPath(import.meta.url) === (await import('node:fs')).realpathSync(process.argv[1])) {
  await parentMain().catch((e) => {
    process.stderr.write(`bench:province failed: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  });
}
