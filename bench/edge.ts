// npm run bench:edge [-- --quick]
//
// 1. The buffer's write cost, SQLite synchronous=FULL vs NORMAL (why FULL is the default).
// 2. The gateway polling 500 simulated Modbus devices (real driver, simulators in a separate
//    process, temperature/humidity profile with its deadband): CPU and memory of the gateway
//    process, polls/s and records forwarded/s to a real Mosquitto.
// 3. Replay of a 1,000,000-reading backlog to Mosquitto (QoS 1, delete on the receipt) beside
//    the broker's own limit: the same batches published straight from memory, no SQLite.
// The last line is JSON.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { createLogger, systemClock, type Logger } from '../contract/index.ts';
import { createGateway, openSqliteBuffer, parseEdgeConfig, type NewRecord } from '../edge/index.ts';
import { startMosquitto } from '../edge/index.ts';
import { startReceiptResponder } from '../edge/testing.ts';

const quick = process.argv.includes('--quick');
const DEVICES = quick ? 100 : 500;
const LOAD_SECONDS = quick ? 12 : 60;
const BACKLOG = quick ? 100_000 : 1_000_000;
const BATCH = 1000;
const INFLIGHT = Number(process.env.XIAOAN_BENCH_INFLIGHT ?? 16);
const log: Logger = createLogger({ level: 'error' });
const work = mkdtempSync(join(tmpdir(), 'xiaoan-bench-edge-'));
const out: Record<string, unknown> = { quick, devices: DEVICES, backlog: BACKLOG };
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

function measureSync(): void {
  console.log('\n# buffer write cost (one transaction per append)');
  const rows: Record<string, number> = {};
  for (const sync of ['full', 'normal'] as const) {
    for (const per of [1, 100]) {
      const b = openSqliteBuffer({ file: join(work, `sync-${sync}-${per}.sqlite`), maxRecords: 1e9, synchronous: sync, clock: systemClock });
      const n = per === 1 ? 2000 : 500;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        b.append(Array.from({ length: per }, (_, k): NewRecord => ({ kind: 'reading', device: 'd', metric: 'temperature', ts: Date.now(), value: i * per + k, quality: 'good' })));
      }
      const ms = performance.now() - t0;
      b.close();
      rows[`${sync}_${per}`] = (n * per) / (ms / 1000);
      console.log(`  synchronous=${sync.padEnd(6)} ${String(per).padStart(3)} record(s)/tx: ${fmt(n / (ms / 1000))} tx/s, ${(ms / n).toFixed(3)} ms/tx, ${fmt((n * per) / (ms / 1000))} records/s`);
    }
  }
  out.bufferRecordsPerSecond = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, Math.round(v)]));
}

/** N Modbus simulators in their own process, so the gateway's CPU is measured alone. */
async function startSimulators(n: number): Promise<{ urls: string[]; child: ChildProcess }> {
  const script = join(work, 'sims.mts');
  writeFileSync(
    script,
    `import { getProfile, startModbusSimulator, freePort } from ${JSON.stringify(join(process.cwd(), 'device-drivers/index.ts'))};
const profile = await getProfile('temp-humidity-generic');
const urls = [];
const sims = [];
for (let i = 0; i < ${n}; i++) {
  const s = await startModbusSimulator({ profile, host: '127.0.0.1', port: await freePort(), initial: { temperature: 20 + (i % 10), humidity: 50 } });
  sims.push(s); urls.push(s.url);
}
// a slow random walk: some readings pass the deadband, most do not (report by exception)
setInterval(() => { for (const [i, s] of sims.entries()) if (Math.random() < 0.2) s.set('temperature', 20 + (i % 10) + Math.round(Math.random() * 10) / 10); }, 1000);
process.stdout.write(JSON.stringify(urls) + '\\n');
`,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
  const urls = await new Promise<string[]>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)) as string[]);
    });
    child.once('exit', (c) => reject(new Error(`simulators exited ${c}`)));
  });
  return { urls, child };
}

async function loadTest(brokerUrl: string): Promise<void> {
  console.log(`\n# ${DEVICES} simulated Modbus devices (temp-humidity-generic, every 5 s ± 10 %), ${LOAD_SECONDS} s`);
  const sims = await startSimulators(DEVICES);
  const cfg = parseEdgeConfig({
    gatewayId: 'gw-bench-load', county: '370102', site: '37/3701/370102/3737000001',
    uplink: { url: brokerUrl }, dataDir: join(work, 'load'), http: { port: 0 }, deviceBroker: { port: 0 },
    devices: sims.urls.map((url, i) => ({ id: `th-${i}`, profile: 'temp-humidity-generic', url, intervalMs: 5000 })),
  });
  const centre = await startReceiptResponder(brokerUrl, { filter: 'xiaoan/v1/+/+/+/gw-bench-load' });
  const gw = await createGateway(cfg, { log });
  await gw.start();
  // let every device poll once (first polls are spread over one interval)
  await new Promise((r) => setTimeout(r, 6000));
  const polls0 = gw.metrics();
  const st0 = gw.status().buffer;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let rssMax = 0;
  const sampler = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage().rss)), 500);
  await new Promise((r) => setTimeout(r, LOAD_SECONDS * 1000));
  clearInterval(sampler);
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const st1 = gw.status().buffer;
  const sumPolls = (m: string) => [...m.matchAll(/^xiaoan_edge_poll_duration_seconds_count\{[^}]*\} (\d+)$/gm)].reduce((s, x) => s + Number(x[1]), 0);
  const sumPollSecs = (m: string) => [...m.matchAll(/^xiaoan_edge_poll_duration_seconds_sum\{[^}]*\} (\S+)$/gm)].reduce((s, x) => s + Number(x[1]), 0);
  const polls1 = gw.metrics();
  const polls = sumPolls(polls1) - sumPolls(polls0);
  const mem = process.memoryUsage();
  const status = gw.status();
  const r = {
    cpuPercentOfOneCore: (100 * (cpu.user + cpu.system)) / 1e6 / secs,
    rssMb: mem.rss / 2 ** 20,
    rssMaxMb: rssMax / 2 ** 20,
    heapUsedMb: mem.heapUsed / 2 ** 20,
    pollsPerSecond: polls / secs,
    meanPollMs: (1000 * (sumPollSecs(polls1) - sumPollSecs(polls0))) / Math.max(1, polls),
    recordsPerSecond: (st1.appended - st0.appended) / secs,
    devicesOnline: status.devices.online,
    bufferDepth: st1.depth,
  };
  console.log(`  gateway CPU ${r.cpuPercentOfOneCore.toFixed(1)} % of one core, RSS ${r.rssMb.toFixed(0)} MB (max ${r.rssMaxMb.toFixed(0)}), heap ${r.heapUsedMb.toFixed(0)} MB`);
  console.log(`  ${r.pollsPerSecond.toFixed(1)} polls/s (expected ${(DEVICES / 5).toFixed(0)}), mean poll ${r.meanPollMs.toFixed(1)} ms, ${r.devicesOnline}/${DEVICES} online`);
  console.log(`  ${r.recordsPerSecond.toFixed(1)} records/s forwarded of ${(r.pollsPerSecond * 4).toFixed(0)} values read/s (deadband + integrity), buffer depth ${r.bufferDepth}`);
  out.load = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.round(v * 10) / 10]));
  await gw.stop();
  await centre.close();
  sims.child.kill('SIGTERM');
}

function payloadOf(gateway: string, from: number, n: number): string {
  const readings = Array.from({ length: n }, (_, k) => ({ seq: from + k, device: `th-${(from + k) % 500}`, metric: 'temperature', ts: 1_750_000_000_000 + from + k, value: 20 + ((from + k) % 100) / 10, quality: 'good' }));
  return JSON.stringify({ v: 1, gateway, sentAt: Date.now(), readings });
}

/** The broker's own limit for this traffic: the same batches, QoS 1, same window, from memory. */
async function brokerLimit(brokerUrl: string): Promise<number> {
  const client = await mqtt.connectAsync(brokerUrl, { clientId: 'bench-raw', clean: true });
  const batches = Math.ceil(BACKLOG / BATCH);
  const payloads = Array.from({ length: Math.min(batches, 50) }, (_, i) => payloadOf('gw-bench-raw', i * BATCH + 1, BATCH));
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < batches) {
      const i = next++;
      await client.publishAsync('xiaoan/v1/37/3701/370102/gw-bench-raw/readings', payloads[i % payloads.length]!, { qos: 1 });
    }
  };
  await Promise.all(Array.from({ length: INFLIGHT }, worker));
  const secs = (performance.now() - t0) / 1000;
  await client.endAsync();
  return BACKLOG / secs;
}

async function replay(brokerUrl: string): Promise<number> {
  console.log(`\n# replay of a ${fmt(BACKLOG)}-reading backlog (batches of ${BATCH}, ${INFLIGHT} awaiting a receipt)`);
  const dir = join(work, 'replay');
  const b = openSqliteBuffer({ file: join(dir, 'buffer.sqlite'), maxRecords: BACKLOG * 2, clock: systemClock });
  const t0 = performance.now();
  for (let i = 0; i < BACKLOG; i += 10_000) {
    b.append(Array.from({ length: Math.min(10_000, BACKLOG - i) }, (_, k): NewRecord => ({ kind: 'reading', device: `th-${(i + k) % 500}`, metric: 'temperature', ts: 1_750_000_000_000 + i + k, value: 20 + ((i + k) % 100) / 10, quality: 'good' })));
  }
  b.close();
  console.log(`  backlog written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const cfg = parseEdgeConfig({
    gatewayId: 'gw-bench-replay', county: '370102', site: '37/3701/370102/3737000001',
    uplink: { url: brokerUrl, batchSize: BATCH, inflight: INFLIGHT }, dataDir: dir, http: { port: 0 }, deviceBroker: { port: 0 },
    buffer: { maxRecords: BACKLOG * 2, replayPerSecond: 100_000_000 },
  });
  // the stand-in centre: a receipt for every batch, as an ingest worker sends after its commit
  const centre = await startReceiptResponder(brokerUrl, { filter: 'xiaoan/v1/+/+/+/gw-bench-replay' });
  const gw = await createGateway(cfg, { log });
  // from start() (connecting takes a few ms) to the last receipt: most of it happens inside start()
  const t1 = performance.now();
  const cpu0 = process.cpuUsage();
  await gw.start();
  while (gw.status().buffer.depth > 0) await new Promise((r) => setTimeout(r, 2));
  const secs = (performance.now() - t1) / 1000;
  const cpu = process.cpuUsage(cpu0);
  console.log(`  gateway CPU during replay: ${((100 * (cpu.user + cpu.system)) / 1e6 / secs).toFixed(0)} % of one core`);
  await gw.stop();
  await centre.close();
  return BACKLOG / secs;
}

try {
  const broker = await startMosquitto(join(work, 'mosquitto'));
  console.log(`校安 edge benchmark${quick ? ' (quick)' : ''} — Mosquitto on ${broker.url}, ${(await import('node:os')).cpus().length} cores`);
  measureSync();
  await loadTest(broker.url);
  const replayRate = await replay(broker.url);
  const limit = await brokerLimit(broker.url);
  console.log(`  gateway replay:      ${fmt(replayRate)} readings/s (SQLite read → publish → receipt → delete)`);
  console.log(`  Mosquitto's limit:   ${fmt(limit)} readings/s (same batches from memory, QoS 1, same window)`);
  console.log(`  → ${(100 * replayRate / limit).toFixed(0)} % of the broker's limit; ${fmt(BACKLOG)} readings in ${(BACKLOG / replayRate).toFixed(1)} s`);
  console.log('  (FIELD-NOTES: Mosquitto moves ~144k 200-byte QoS 0 messages/s here; a batch carries 1000 readings)');
  out.replayReadingsPerSecond = Math.round(replayRate);
  out.brokerLimitReadingsPerSecond = Math.round(limit);
  await broker.stop();
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
process.exit(0);
