// npm run bench:ingest [-- --quick] [--gateways N] [--batch N] [--total N] [--naive N]
//
// Readings per second end to end: many simulated gateways (MQTT connections in a child process)
// publish reading batches QoS 1 through Mosquitto on 127.0.0.1:1883; one ingest worker stores them
// in PostgreSQL at 127.0.0.1:5432 (a throwaway database). Beside it, on the same rows and the same
// table: a raw COPY of them (the database's own limit) and a naive consumer that INSERTs each
// reading of each message as it comes. Last line: JSON {"ingest_rps","copy_rps","naive_rps","ratio_to_copy"}.
//
// Publishers keep at most `window` readings ahead of what is stored (they hear the count on a
// bench topic), so the broker's queues never overflow and drop messages; that is flow control a
// real fleet gets from the gateways' own buffers.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { buildTopic, silentLogger, type ReadingBatch } from '../contract/index.ts';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(`--${name}`);
const num = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const str = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? String(args[i + 1]) : dflt;
};

const MQTT_URL = str('mqtt', 'mqtt://127.0.0.1:1883');
const PG_ADMIN = str('pg', process.env.XIAOAN_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres');
const COUNTIES = ['371702', '371703', '371721', '371722'];
const METRICS = ['temperature', 'humidity', 'smoke_density', 'lel_percent'];

interface Plan {
  run: string;
  gateways: number;
  batch: number;
  /** messages per gateway */
  messages: number;
  t0: number;
  window: number;
}

const gatewayId = (p: Plan, g: number) => `bench-${p.run}-${g}`;
const countyOf = (g: number) => COUNTIES[g % COUNTIES.length]!;

/** The same rows every time for a plan: gateway g, message m. */
function makeBatch(p: Plan, g: number, m: number): ReadingBatch {
  const readings = [];
  for (let i = 0; i < p.batch; i++) {
    const seq = m * p.batch + i;
    readings.push({
      seq,
      device: `dev-${(seq * 7) % 20}`,
      metric: METRICS[seq % METRICS.length]!,
      ts: p.t0 + seq * 100 + g,
      value: Math.round(((seq * 37) % 1000) * 1.37) / 100,
      quality: 'good' as const,
    });
  }
  return { v: 1, gateway: gatewayId(p, g), sentAt: Date.now(), readings };
}

// ---------------------------------------------------------------- publisher (child process)
async function publisher(p: Plan, limitMessages: number) {
  const control = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `bench-ctl-${p.run}-${process.pid}` });
  let stored = 0;
  let go = false;
  await control.subscribeAsync(`xiaoan-bench/${p.run}/#`, { qos: 0 });
  control.on('message', (topic, payload) => {
    if (topic.endsWith('/stored')) stored = Number(payload.toString());
    if (topic.endsWith('/go')) {
      go = true;
      stored = 0;
    }
  });
  const clients = await Promise.all(
    Array.from({ length: p.gateways }, (_, g) =>
      mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `${gatewayId(p, g)}-${process.pid}`, clean: true }),
    ),
  );
  control.publish(`xiaoan-bench/${p.run}/ready`, '1');
  for (;;) {
    while (!go) await new Promise((r) => setTimeout(r, 10));
    go = false;
    let sent = 0;
    // round-robin over gateways, message by message, within the window
    const inflight: Promise<unknown>[] = [];
    for (let m = 0; m < limitMessages; m++) {
      for (let g = 0; g < p.gateways; g++) {
        while (sent - stored > p.window) await new Promise((r) => setTimeout(r, 2));
        const c = clients[g]!;
        inflight.push(c.publishAsync(buildTopic({ county: countyOf(g), gatewayId: gatewayId(p, g), channel: 'readings' }), JSON.stringify(makeBatch(p, g, m)), { qos: 1 }));
        sent += p.batch;
        if (inflight.length >= 2000) await Promise.all(inflight.splice(0));
      }
    }
    await Promise.all(inflight);
    control.publish(`xiaoan-bench/${p.run}/sent`, String(sent));
    const next = await new Promise<string>((resolve) => {
      const f = (topic: string, payload: Buffer) => {
        if (topic.endsWith('/next')) {
          control.off('message', f);
          resolve(payload.toString());
        }
      };
      control.on('message', f);
    });
    if (next === 'quit') break;
    limitMessages = Number(next);
  }
  await Promise.all(clients.map((c) => c.endAsync()));
  await control.endAsync();
}

// ---------------------------------------------------------------- controller
async function main() {
  const quick = flag('quick');
  const gateways = num('gateways', quick ? 50 : 400);
  const batch = num('batch', 100);
  const total = num('total', quick ? 150_000 : 2_000_000);
  const naiveTotal = num('naive', quick ? 10_000 : 60_000);
  const naiveCapSeconds = num('naive-seconds', quick ? 8 : 60);
  const messages = Math.max(1, Math.floor(total / (gateways * batch)));
  const plan: Plan = { run: randomBytes(3).toString('hex'), gateways, batch, messages, t0: Date.now() - 3 * 3_600_000, window: num('window', 150_000) };
  const rows = gateways * messages * batch;
  const naiveMessages = Math.max(1, Math.floor(naiveTotal / (gateways * batch)));
  const log = (s: string) => process.stderr.write(s + '\n');
  log(`bench:ingest — ${gateways} gateways × ${messages} messages × ${batch} readings = ${rows.toLocaleString()} rows; ` +
    `Mosquitto ${MQTT_URL}, PostgreSQL ${PG_ADMIN.replace(/\/\/[^@]*@/, '//')}${quick ? ' (quick)' : ''}`);

  const { openStore, createIngestWorker } = await import('../ingest/index.ts');
  const dbName = `xiaoan_bench_${plan.run}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  const dbUrl = PG_ADMIN.replace(/\/[^/]*$/, `/${dbName}`);
  const store = await openStore(dbUrl, { log: silentLogger });
  let child: ReturnType<typeof spawn> | undefined;
  let control: mqtt.MqttClient | undefined;
  try {
    for (let g = 0; g < gateways; g++) {
      await store.db.query(
        `insert into gateways (id, org_path, county, name, secret_hash) values ($1, $2, $3, $1, 'scrypt$bench')`,
        [gatewayId(plan, g), `37/3717/${countyOf(g)}/${String(3717000000 + g)}`, countyOf(g)],
      );
    }
    // partitions for the rows' days exist before any timing
    await store.sink.partitions.ensure([plan.t0, plan.t0 + messages * batch * 100 + gateways]);

    // ---- 1. raw COPY of the same rows into the same table (the limit)
    const copyClient = new pg.Client({ connectionString: dbUrl });
    await copyClient.connect();
    const copyStarted = performance.now();
    await new Promise<void>((resolve, reject) => {
      const stream = copyClient.query(copyFrom('copy readings (gateway_id, seq, device_id, metric, ts, value, quality) from stdin'));
      stream.on('finish', resolve);
      stream.on('error', reject);
      let m = 0, g = 0;
      const write = () => {
        let ok = true;
        while (ok && m < messages) {
          const b = makeBatch(plan, g, m);
          let chunk = '';
          for (const r of b.readings) chunk += `${b.gateway}\t${r.seq}\t${r.device}\t${r.metric}\t${new Date(r.ts).toISOString()}\t${r.value}\t${r.quality}\n`;
          ok = stream.write(chunk);
          if (++g === gateways) { g = 0; m++; }
        }
        if (m >= messages) stream.end();
        else stream.once('drain', write);
      };
      write();
    });
    const copySeconds = (performance.now() - copyStarted) / 1000;
    const copyRps = rows / copySeconds;
    await copyClient.end();
    log(`raw COPY          ${rows.toLocaleString()} rows in ${copySeconds.toFixed(2)} s → ${Math.round(copyRps).toLocaleString()} rows/s`);
    await store.db.exec('truncate readings, latest_readings, readings_1m, readings_1h');
    await store.db.exec('vacuum analyze readings');

    // ---- publishers (child process, so they do not share the worker's event loop)
    control = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `bench-ctl-${plan.run}-main` });
    await control.subscribeAsync(`xiaoan-bench/${plan.run}/+`, { qos: 0 });
    const waitFor = (suffix: string) => new Promise<string>((resolve) => {
      const f = (topic: string, payload: Buffer) => {
        if (topic === `xiaoan-bench/${plan.run}/${suffix}`) {
          control!.off('message', f);
          resolve(payload.toString());
        }
      };
      control!.on('message', f);
    });
    const ready = waitFor('ready');
    child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--publisher', JSON.stringify(plan), String(messages), '--mqtt', MQTT_URL], { stdio: ['ignore', 'inherit', 'inherit'] });
    await ready;

    // ---- 2. end to end through the ingest worker
    const worker = await createIngestWorker({
      store, brokerUrl: MQTT_URL, username: 'bench', password: 'bench', region: '3717', shareGroup: `bench-${plan.run}`,
      listeners: [], log: silentLogger,
    });
    await worker.start();
    const progress = setInterval(() => control!.publish(`xiaoan-bench/${plan.run}/stored`, String(worker.stats().stored.readings + worker.stats().duplicates.readings)), 20);
    const firstRunSent = waitFor('sent');
    const started = performance.now();
    control.publish(`xiaoan-bench/${plan.run}/go`, '1');
    let lastLog = started;
    while (worker.stats().stored.readings < rows) {
      await new Promise((r) => setTimeout(r, 20));
      if (performance.now() - lastLog > 5000) {
        lastLog = performance.now();
        const s = worker.stats();
        log(`  … ${s.stored.readings.toLocaleString()} stored, ${s.commits.readings} commits, last ${s.lastCommit?.records ?? 0} rows in ${s.lastCommit?.ms ?? 0} ms, lag ${s.lagMs ?? 0} ms`);
      }
      if (performance.now() - started > 600_000) throw new Error('ingest did not finish within 10 minutes');
    }
    const ingestSeconds = (performance.now() - started) / 1000;
    const ingestRps = rows / ingestSeconds;
    const s = worker.stats();
    clearInterval(progress);
    await worker.stop();
    log(`ingest end to end ${rows.toLocaleString()} rows in ${ingestSeconds.toFixed(2)} s → ${Math.round(ingestRps).toLocaleString()} rows/s ` +
      `(${s.commits.readings} commits, ~${Math.round(rows / Math.max(1, s.commits.readings))} rows each; duplicates ${s.duplicates.readings}; dead letters ${s.deadLetters.total})`);
    const check = await store.db.query<{ n: number; d: number }>('select count(*)::int as n, count(distinct (gateway_id, seq))::int as d from readings');
    log(`  stored rows ${check.rows[0]!.n.toLocaleString()} (distinct ${check.rows[0]!.d.toLocaleString()})`);
    await store.db.exec('truncate readings, latest_readings, readings_1m, readings_1h');

    // ---- 3. naive consumer: one INSERT per reading, as each message comes
    const naiveRows = gateways * naiveMessages * batch;
    const naiveDb = new pg.Client({ connectionString: dbUrl });
    await naiveDb.connect();
    let naiveStored = 0;
    const naive = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `bench-naive-${plan.run}`, clean: true });
    let chain: Promise<void> = Promise.resolve();
    naive.on('message', (_topic, payload) => {
      chain = chain.then(async () => {
        const b = JSON.parse(payload.toString()) as ReadingBatch;
        for (const r of b.readings) {
          await naiveDb.query(
            `insert into readings (gateway_id, seq, device_id, metric, ts, value, quality)
             values ($1, $2, $3, $4, to_timestamp($5 / 1000.0), $6, $7) on conflict do nothing`,
            [b.gateway, r.seq, r.device, r.metric, r.ts, r.value, r.quality],
          );
          naiveStored++;
        }
      });
    });
    await naive.subscribeAsync(`$share/naive-${plan.run}/xiaoan/v1/37/3717/+/+/readings`, { qos: 1 });
    const naiveProgress = setInterval(() => control!.publish(`xiaoan-bench/${plan.run}/stored`, String(naiveStored)), 20);
    await firstRunSent; // the publishers finished the first run and wait for the next
    const firstRunSentAgain = waitFor('sent');
    const naiveStarted = performance.now();
    control.publish(`xiaoan-bench/${plan.run}/next`, String(naiveMessages));
    await new Promise((r) => setTimeout(r, 50));
    control.publish(`xiaoan-bench/${plan.run}/go`, '1');
    // measured over all its rows, or over what it managed within the time cap
    while (naiveStored < naiveRows && performance.now() - naiveStarted < naiveCapSeconds * 1000) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const naiveSeconds = (performance.now() - naiveStarted) / 1000;
    const naiveDone = naiveStored;
    const naiveRps = naiveDone / naiveSeconds;
    clearInterval(naiveProgress);
    await naive.endAsync(true);
    control.publish(`xiaoan-bench/${plan.run}/stored`, String(naiveRows * 10)); // release the publishers
    await firstRunSentAgain;
    await Promise.race([chain, new Promise((r) => setTimeout(r, 2000))]);
    await naiveDb.end();
    log(`naive consumer    ${naiveDone.toLocaleString()} rows in ${naiveSeconds.toFixed(2)} s → ${Math.round(naiveRps).toLocaleString()} rows/s (of the first ${naiveRows.toLocaleString()} rows; capped at ${naiveCapSeconds} s)`);
    control.publish(`xiaoan-bench/${plan.run}/next`, 'quit');

    const ratio = ingestRps / copyRps;
    log(`ratio to COPY ${ratio.toFixed(2)} (aim ≥ 0.5); ${(ingestRps / naiveRps).toFixed(1)}× the naive consumer`);
    console.log(JSON.stringify({ ingest_rps: Math.round(ingestRps), copy_rps: Math.round(copyRps), naive_rps: Math.round(naiveRps), ratio_to_copy: Number(ratio.toFixed(3)) }));
  } finally {
    if (child && child.exitCode === null) {
      await new Promise((r) => { child!.once('exit', r); setTimeout(() => { child!.kill(); r(null); }, 3000); });
    }
    await control?.endAsync().catch(() => {});
    await store.close();
    await admin.query(`drop database if exists ${dbName} with (force)`);
    await admin.end();
  }
}

if (args[0] === '--publisher') {
  publisher(JSON.parse(args[1]!) as Plan, Number(args[2])).then(() => process.exit(0), (e) => {
    console.error('publisher failed:', e);
    process.exit(1);
  });
} else {
  main().then(() => process.exit(0), (e) => {
    console.error('bench:ingest failed:', (e as Error).message);
    process.exit(1);
  });
}
