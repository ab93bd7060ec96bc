// npm run bench:modbus [-- --quick] [--seconds N] [--concurrency N]
// Points per second and CPU per 1,000 points polled by Xiaoan's Modbus TCP driver, against two
// slaves: Debian's pymodbus (third party) and our profile-driven simulator (run in a child
// process, so its CPU is not counted as the driver's). Beside each, the same reads issued
// directly through modbus-serial with no driver (the limit the driver's overhead is measured
// against). The last line is JSON.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import ModbusRTU from 'modbus-serial';
import { silentLogger, systemClock } from '../contract/index.ts';
import { createDriver, freePort, LineRegistry, parseProfile, startModbusSimulator, type ModbusProfile } from '../device-drivers/index.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const POINTS = 240; // input registers 0–239: two coalesced requests (125 + 115 registers) per poll

const PROFILE_TEXT = [
  'id: bench-240-points',
  'protocol: modbus',
  'category: environment',
  'description: { zh: 基准测试, en: benchmark }',
  'poll: { interval: 1s, integrity: 1m }',
  'modbus: { timeout: 2000, retries: 0 }',
  'points:',
  ...Array.from({ length: POINTS }, (_, i) => `  - { name: p${i}, table: input, address: ${i}, type: uint16, scale: 0.1 }`),
].join('\n');

function parsedProfile(): ModbusProfile {
  const r = parseProfile('bench.yaml', PROFILE_TEXT);
  if (!r.profile) throw new Error(r.problems.join('\n'));
  return r.profile as ModbusProfile;
}

// ---- child mode: serve the simulator and wait ----
if (process.argv.includes('--serve-sim')) {
  const port = Number(process.argv[process.argv.indexOf('--serve-sim') + 1]);
  const sim = await startModbusSimulator({ profile: parsedProfile(), port, unitId: 1, initial: Object.fromEntries(Array.from({ length: POINTS }, (_, i) => [`p${i}`, i / 10])) });
  process.stdout.write('READY\n');
  process.on('SIGTERM', () => void sim.close().then(() => process.exit(0)));
  await new Promise(() => {});
}

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const flag = (n: string, d: number) => (args.includes(`--${n}`) ? Number(args[args.indexOf(`--${n}`) + 1]) : d);
const seconds = flag('seconds', quick ? 2.5 : 10);
// cases alternate in rounds, so load from other processes on a shared machine falls on all alike
const rounds = flag('rounds', quick ? 2 : 5);
const concurrency = flag('concurrency', 4);

function cpuOf(pid: number): number {
  // /proc/PID/stat fields 14 and 15: utime and stime in clock ticks (100 Hz on Linux)
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) / 100) * 1000;
}

async function startChild(cmd: string, argv: string[], quietStderr = false): Promise<ChildProcess> {
  // pymodbus logs every closed connection at ERROR level; its stderr is noise here
  const p = spawn(cmd, argv, { stdio: ['ignore', 'pipe', quietStderr ? 'ignore' : 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${cmd} did not start`)), 20_000);
    p.stdout!.on('data', (d) => d.toString().includes('READY') && (clearTimeout(t), resolve()));
    p.once('exit', (c) => reject(new Error(`${cmd} exited ${c}`)));
  });
  await new Promise((r) => setTimeout(r, 300));
  return p;
}

interface Row { peer: string; client: string; points: number; seconds: number; pointsPerSec: number; requestsPerSec: number; cpuMsPer1000: number; peerCpuMsPer1000: number }

type Target = { kind: 'tcp'; port: number } | { kind: 'rtu'; path: string; baud: number };

async function measure(peer: string, target: Target, peerPid: number, client: 'xiaoan-driver' | 'modbus-serial-raw', seconds: number): Promise<Row> {
  // one serial line carries one request at a time: a single worker there
  const workersWanted = target.kind === 'rtu' ? 1 : concurrency;
  const url = target.kind === 'tcp' ? `modbus-tcp://127.0.0.1:${target.port}?unit=1` : `modbus-rtu://${target.path}?baud=${target.baud}&unit=1`;
  const stopAt = () => performance.now() >= t0 + seconds * 1000;
  let points = 0;
  let requests = 0;
  const workers: Array<() => Promise<void>> = [];
  const closers: Array<() => Promise<void>> = [];
  const profile = parsedProfile();
  for (let w = 0; w < workersWanted; w++) {
    if (client === 'xiaoan-driver') {
      // one line (connection) per worker, as devices behind different endpoints would have
      const d = await createDriver({ id: `b${w}`, profile: profile.id, url }, { clock: systemClock, log: silentLogger }, { profile, modbus: { lines: new LineRegistry() } });
      closers.push(() => d.close());
      workers.push(async () => {
        while (!stopAt()) {
          const obs = await d.poll!();
          if (!obs.length) throw new Error(`driver poll failed: ${d.health().lastError}`);
          points += obs.length;
          requests += 2;
        }
      });
    } else {
      const c = new ModbusRTU();
      if (target.kind === 'tcp') await c.connectTCP('127.0.0.1', { port: target.port });
      else await c.connectRTUBuffered(target.path, { baudRate: target.baud });
      c.setID(1);
      c.setTimeout(2000);
      closers.push(() => new Promise((r) => c.close(() => r())));
      workers.push(async () => {
        while (!stopAt()) {
          const a = await c.readInputRegisters(0, 125);
          const b = await c.readInputRegisters(125, 115);
          points += a.data.length + b.data.length;
          requests += 2;
        }
      });
    }
  }
  const cpu0 = process.cpuUsage();
  const peer0 = cpuOf(peerPid);
  const t0 = performance.now();
  await Promise.all(workers.map((w) => w()));
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const peerCpu = cpuOf(peerPid) - peer0;
  for (const c of closers) await c();
  return {
    peer,
    client,
    points,
    seconds: Number(elapsed.toFixed(2)),
    pointsPerSec: Math.round(points / elapsed),
    requestsPerSec: Math.round(requests / elapsed),
    cpuMsPer1000: Number((((cpu.user + cpu.system) / 1000 / points) * 1000).toFixed(3)),
    peerCpuMsPer1000: Number(((peerCpu / points) * 1000).toFixed(3)),
  };
}

const rows: Row[] = [];
const children: ChildProcess[] = [];
try {
  const pyPort = await freePort();
  const py = await startChild('/usr/bin/python3', [join(HERE, '..', 'device-drivers', 'modbus', 'testdata', 'pymodbus_peer.py'), 'tcp', String(pyPort), '1'], true);
  children.push(py);
  const simPort = await freePort();
  const sim = await startChild(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve-sim', String(simPort)]);
  children.push(sim);

  console.log(`Modbus polling, ${POINTS} points per poll (2 coalesced FC 4 requests); TCP over ${concurrency} connections, RTU on one line; ${seconds} s per case in ${rounds} alternating rounds${quick ? ' (quick)' : ''}`);
  console.log('peer                client              points/s   requests/s   driver CPU ms/1000 pts   peer CPU ms/1000 pts');
  // RTU: pymodbus on one end of a socat pty pair at 115,200 baud, the client on the other
  const tag = process.pid;
  const ttyA = `/tmp/xiaoan-bench-${tag}-A`;
  const ttyB = `/tmp/xiaoan-bench-${tag}-B`;
  const socat = spawn('socat', [`pty,raw,echo=0,link=${ttyA}`, `pty,raw,echo=0,link=${ttyB}`], { stdio: 'ignore' });
  children.push(socat);
  await new Promise((r) => setTimeout(r, 500));
  const pyRtu = await startChild('/usr/bin/python3', [join(HERE, '..', 'device-drivers', 'modbus', 'testdata', 'pymodbus_peer.py'), 'rtu', ttyB, '115200', '1'], true);
  children.push(pyRtu);

  const cases: Array<readonly [string, Target, number]> = [
    ['pymodbus 3.0', { kind: 'tcp', port: pyPort }, py.pid!],
    ['xiaoan simulator', { kind: 'tcp', port: simPort }, sim.pid!],
    ['pymodbus RTU 115k2', { kind: 'rtu', path: ttyA, baud: 115200 }, pyRtu.pid!],
  ];
  const sums = new Map<string, Row>();
  for (let round = 0; round < rounds; round++) {
    for (const [name, target, pid] of cases) {
      for (const client of ['modbus-serial-raw', 'xiaoan-driver'] as const) {
        const r = await measure(name, target, pid, client, seconds / rounds);
        const key = `${name}|${client}`;
        const acc = sums.get(key);
        if (!acc) sums.set(key, { ...r, cpuMsPer1000: (r.cpuMsPer1000 * r.points) / 1000, peerCpuMsPer1000: (r.peerCpuMsPer1000 * r.points) / 1000, requestsPerSec: r.requestsPerSec * r.seconds });
        else {
          acc.points += r.points;
          acc.seconds += r.seconds;
          acc.cpuMsPer1000 += (r.cpuMsPer1000 * r.points) / 1000;
          acc.peerCpuMsPer1000 += (r.peerCpuMsPer1000 * r.points) / 1000;
          acc.requestsPerSec += r.requestsPerSec * r.seconds;
        }
      }
    }
  }
  for (const acc of sums.values()) {
    // sums of CPU ms and requests → rates over the whole run
    const r: Row = {
      ...acc,
      seconds: Number(acc.seconds.toFixed(2)),
      pointsPerSec: Math.round(acc.points / acc.seconds),
      requestsPerSec: Math.round(acc.requestsPerSec / acc.seconds),
      cpuMsPer1000: Number(((acc.cpuMsPer1000 / acc.points) * 1000).toFixed(3)),
      peerCpuMsPer1000: Number(((acc.peerCpuMsPer1000 / acc.points) * 1000).toFixed(3)),
    };
    rows.push(r);
    console.log(`${r.peer.padEnd(19)} ${r.client.padEnd(19)} ${String(r.pointsPerSec).padStart(8)}   ${String(r.requestsPerSec).padStart(10)}   ${String(r.cpuMsPer1000).padStart(22)}   ${String(r.peerCpuMsPer1000).padStart(20)}`);
  }
  const get = (peer: string, client: string) => rows.find((r) => r.peer === peer && r.client === client)!;
  for (const peer of cases.map((c) => c[0])) {
    const raw = get(peer, 'modbus-serial-raw');
    const drv = get(peer, 'xiaoan-driver');
    console.log(`${peer}: the driver reaches ${((drv.pointsPerSec / raw.pointsPerSec) * 100).toFixed(0)} % of raw modbus-serial throughput; decoding and health add ${(drv.cpuMsPer1000 - raw.cpuMsPer1000).toFixed(3)} ms CPU per 1000 points`);
  }
  // the wire limit of the RTU line: 115,200 baud, 11 bits a character, two requests per poll of
  // 8 + 255 and 8 + 235 bytes plus four 3.5-character gaps
  const rtuBytesPerPoll = 8 + 5 + 250 + 8 + 5 + 230 + 4 * 3.5;
  const rtuLimit = Math.round((POINTS * 115200) / 11 / rtuBytesPerPoll);
  console.log(`RTU wire limit of a real RS-485 line at 115,200 baud: ${rtuLimit} points/s (a pty pair does not pace bytes at the baud rate, so the RTU rows measure software cost and the inter-frame gaps, not the line)`);
  console.log(JSON.stringify({ bench: 'modbus', quick, concurrency, rounds, pointsPerPoll: POINTS, rtuWireLimitPointsPerSec: rtuLimit, rows }));
} finally {
  for (const c of children) c.kill('SIGTERM');
}
process.exit(0);
