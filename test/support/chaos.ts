// The zero-loss harness: every tier a process of its own, as a school and a city run them.
//   devices (MQTT clients of ours that count their own PUBACK / PUBCOMP)
//   → gateway process (`xiaoan edge`) → Mosquitto with persistence, passwords and an ACL
//   → ingest process (`xiaoan ingest`, default client id) → PostgreSQL (a database of its own)
// A record counts as lost when its device got the acknowledgement and it is not in `readings` /
// `events`; as duplicated when it is there twice (by (gateway, seq) or by the device's own value).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import type { Db } from '../../ingest/db.ts';
import { COUNTER_PROFILE } from '../edge-support.ts';
import { freePort } from './peers.ts';

export const COUNTY = '370102';
export const SITE = '37/3701/370102/3737000001';
const INGEST_PASSWORD = 'chaos-ingest-pw';
const DEVICE_PASSWORD = 'chaos-device-pw';


const waitPort = async (port: number, ms = 20_000) => {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), r(true)));
      c.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms} ms`);
    await sleep(50);
  }
};
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** A child process that prints JSON log lines; killed with SIGKILL or stopped with SIGTERM. */
export interface Proc {
  child: ChildProcess;
  exited: Promise<number | null>;
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

function spawnProc(args: string[], env: NodeJS.ProcessEnv, cwd = process.cwd()): Proc {
  const child = spawn(process.execPath, ['bin/xiaoan.js', ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer) => (out = (out + d.toString()).slice(-40_000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    exited,
    output: () => out,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** Mosquitto 2 with persistence, a password file and an ACL that binds a gateway to its own topics. */
export class Broker {
  private proc: ChildProcess | null = null;
  readonly url: string;
  private constructor(readonly port: number, private readonly dir: string) {
    this.url = `mqtt://127.0.0.1:${port}`;
  }
  static async create(gatewayIds: string[]): Promise<Broker> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'xiaoan-chaos-mosq-'));
    chmodSync(dir, 0o777);
    const pw = join(dir, 'passwd');
    writeFileSync(pw, '');
    const add = (u: string, p: string) => {
      const r = spawnSync('mosquitto_passwd', ['-b', pw, u, p], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`mosquitto_passwd failed: ${r.stderr}`);
    };
    add('svc-ingest', INGEST_PASSWORD);
    for (const g of gatewayIds) add(g, gatewayPassword(g));
    // Gateways: their own uplink topics; ingest: everything under xiaoan/v1 (docker/emqx/acl.conf says the same).
    writeFileSync(join(dir, 'acl'), [
      'user svc-ingest',
      'topic readwrite xiaoan/v1/#',
      'topic readwrite $share/+/xiaoan/v1/#',
      '',
      'pattern write xiaoan/v1/+/+/+/%u/readings',
      'pattern write xiaoan/v1/+/+/+/%u/events',
      'pattern write xiaoan/v1/+/+/+/%u/status',
      'pattern write xiaoan/v1/+/+/+/%u/cmd-result',
      'pattern read xiaoan/v1/+/+/+/%u/cmd/#',
      'pattern read xiaoan/v1/+/+/+/%u/receipt',
      '',
    ].join('\n'));
    for (const f of ['passwd', 'acl']) chmodSync(join(dir, f), 0o644);
    writeFileSync(join(dir, 'mosquitto.conf'), [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous false',
      `password_file ${pw}`,
      `acl_file ${join(dir, 'acl')}`,
      'persistence true',
      `persistence_location ${dir}/`,
      'autosave_interval 1',
      'max_queued_messages 1000000',
      'max_inflight_messages 100',
      'log_dest none',
      '',
    ].join('\n'));
    const b = new Broker(port, dir);
    await b.start();
    return b;
  }
  async start(): Promise<void> {
    this.proc = spawn('mosquitto', ['-c', join(this.dir, 'mosquitto.conf')], { stdio: 'ignore' });
    await waitPort(this.port);
  }
  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (!p || p.exitCode !== null) return;
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
  }
  async close(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export const gatewayPassword = (id: string) => `pw-${id}`;

/** `xiaoan gateway add` as a technician runs it; resolves with its exit code and output. */
export async function registerGatewayByCli(databaseUrl: string, id: string): Promise<{ code: number | null; output: string }> {
  const p = spawnProc(['gateway', 'add', id, '--county', COUNTY, '--org', SITE, '--database', databaseUrl], { ...process.env, XIAOAN_GATEWAY_PASSWORD: gatewayPassword(id) });
  const code = await p.exited;
  return { code, output: p.output() };
}

/** A gateway's files (config, profiles, data) that survive its process being killed. */
export class GatewayHome {
  readonly dir = mkdtempSync(join(tmpdir(), 'xiaoan-chaos-gw-'));
  readonly configFile = join(this.dir, 'gateway.json');
  deviceBrokerPort = 0;
  proc: Proc | null = null;
  constructor(readonly gatewayId: string, readonly devices: string[]) {}

  async write(brokerUrl: string, receiptTimeoutMs: number): Promise<void> {
    mkdirSync(join(this.dir, 'profiles'), { recursive: true });
    writeFileSync(join(this.dir, 'profiles', 'burst-counter-test.yaml'), COUNTER_PROFILE);
    this.deviceBrokerPort = await freePort();
    writeFileSync(this.configFile, JSON.stringify({
      tier: 'edge',
      gatewayId: this.gatewayId,
      county: COUNTY,
      site: SITE,
      uplink: { url: brokerUrl, username: this.gatewayId, password: gatewayPassword(this.gatewayId), reconnectMs: 300, receiptTimeoutMs },
      dataDir: join(this.dir, 'data'),
      deviceBroker: { port: this.deviceBrokerPort, host: '127.0.0.1' },
      http: { port: await freePort(), host: '127.0.0.1' },
      devices: this.devices.map((id) => ({ id, profile: 'burst-counter-test', url: `mqtt://${id}`, password: DEVICE_PASSWORD })),
      buffer: { replayPerSecond: 50_000 },
      logLevel: 'warn',
    }));
  }

  /** starts the process; `waitReady: false` returns at once (for a kill during start-up) */
  async start(opts: { waitReady?: boolean } = {}): Promise<Proc> {
    const env = { ...process.env, XIAOAN_PROFILES: join(this.dir, 'profiles'), XIAOAN_LOG_LEVEL: 'warn' };
    const p = spawnProc(['edge', '--config', this.configFile], env);
    this.proc = p;
    if (opts.waitReady !== false) await until(() => /"gateway started"|"gateway"/.test(p.output()) || p.child.exitCode !== null, 'gateway start', 30_000);
    if (p.child.exitCode !== null) throw new Error(`gateway exited (${p.child.exitCode}):\n${p.output()}`);
    return p;
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The ingest worker as `xiaoan ingest --config FILE`: no client id given, as the compose files run it. */
export class IngestHome {
  readonly dir = mkdtempSync(join(tmpdir(), 'xiaoan-chaos-ingest-'));
  readonly configFile = join(this.dir, 'ingest.json');
  proc: Proc | null = null;
  constructor(private readonly databaseUrl: string, private readonly brokerUrl: string) {}

  async start(): Promise<Proc> {
    writeFileSync(this.configFile, JSON.stringify({
      tier: 'ingest',
      region: '37',
      database: { url: this.databaseUrl },
      broker: { url: this.brokerUrl, username: 'svc-ingest', password: INGEST_PASSWORD },
      http: { port: await freePort(), host: '127.0.0.1' },
      logLevel: 'warn',
    }));
    const p = spawnProc(['ingest', '--config', this.configFile, '--no-rules'], { ...process.env, XIAOAN_LOG_LEVEL: 'warn' });
    this.proc = p;
    return p;
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Values a device sent and whose acknowledgement (PUBACK / PUBCOMP) it received. */
export interface DeviceTally {
  device: string;
  qos: 1 | 2;
  acked: Set<number>;
  alarmsAcked: Set<number>;
}

/**
 * A device that publishes `perSecond` counter values (and an alarm every `alarmEveryMs`) to the
 * gateway's device broker, reconnecting whenever the gateway goes away. A fresh connection
 * never re-sends what the last one left unacknowledged: an unacknowledged value is simply not
 * counted, so a value stored twice can only be the platform's doing.
 */
export class Device {
  readonly tally: DeviceTally;
  private client: MqttClient | null = null;
  private next = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private alarmAt = 0;

  constructor(private readonly home: GatewayHome, readonly id: string, qos: 1 | 2, private readonly perSecond: number, private readonly alarmEveryMs = 0, base = 0) {
    this.tally = { device: id, qos, acked: new Set(), alarmsAcked: new Set() };
    this.next = base;
  }

  start(): void {
    this.stopped = false;
    this.connect();
    const every = 20;
    const perTick = this.perSecond / (1000 / every);
    let owed = 0;
    this.timer = setInterval(() => {
      owed += perTick;
      const c = this.client;
      if (!c?.connected) return;
      for (; owed >= 1; owed--) this.send(c, 'state', this.next++);
      if (this.alarmEveryMs && Date.now() - this.alarmAt >= this.alarmEveryMs) {
        this.alarmAt = Date.now();
        this.send(c, 'alarm', this.next++);
      }
    }, every);
  }

  private send(c: MqttClient, topic: 'state' | 'alarm', n: number): void {
    c.publish(`devices/${this.id}/${topic}`, JSON.stringify({ n }), { qos: this.tally.qos }, (err) => {
      if (err) return;
      (topic === 'alarm' ? this.tally.alarmsAcked : this.tally.acked).add(n);
    });
  }

  private connect(): void {
    if (this.stopped) return;
    const c = mqtt.connect(`mqtt://127.0.0.1:${this.home.deviceBrokerPort}`, {
      clientId: `${this.id}-${Math.random().toString(16).slice(2, 8)}`,
      username: this.id,
      password: DEVICE_PASSWORD,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 2000,
    });
    this.client = c;
    c.on('error', () => {});
    c.once('close', () => {
      c.end(true);
      if (this.client === c) this.client = null;
      if (!this.stopped) setTimeout(() => this.connect(), 200);
    });
  }

  /** alarm values acknowledged since `n` (exclusive) */
  alarmsAfter(n: number): number[] {
    return [...this.tally.alarmsAcked].filter((v) => v > n);
  }

  nextValue(): number {
    return this.next;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const c = this.client;
    this.client = null;
    // give the last publishes a moment to be acknowledged, then close
    await sleep(300);
    await c?.endAsync(true).catch(() => {});
  }
}

export interface Count {
  lost: number[];
  lostAlarms: number[];
  /** rows sharing (gateway, seq) */
  seqDuplicates: number;
  /** a device's value stored under two seqs */
  valueDuplicates: number;
  stored: number;
}

/** What the database holds of each device's acknowledged values. */
export async function countStored(db: Db, gatewayId: string, tallies: DeviceTally[]): Promise<Count> {
  const out: Count = { lost: [], lostAlarms: [], seqDuplicates: 0, valueDuplicates: 0, stored: 0 };
  const r = await db.query<{ n: number; seqs: number }>(
    `select count(*)::int as n, count(distinct seq)::int as seqs from (
       select seq from readings where gateway_id = $1 union all select seq from events where gateway_id = $1) x`,
    [gatewayId],
  );
  out.seqDuplicates = r.rows[0]!.n - r.rows[0]!.seqs;
  for (const t of tallies) {
    const rows = (await db.query<{ value: number }>('select value from readings where gateway_id = $1 and device_id = $2 and metric = $3', [gatewayId, t.device, 'counter'])).rows;
    const values = new Set(rows.map((x) => Number(x.value)));
    out.valueDuplicates += rows.length - values.size;
    out.stored += rows.length;
    for (const v of t.acked) if (!values.has(v)) out.lost.push(v);
    const alarms = (await db.query<{ n: number }>(
      "select (data->>'n')::int as n from events where gateway_id = $1 and device_id = $2 and type = 'button.pressed'",
      [gatewayId, t.device],
    )).rows.map((x) => x.n);
    const alarmSet = new Set(alarms);
    out.valueDuplicates += alarms.length - alarmSet.size;
    out.stored += alarms.length;
    for (const v of t.alarmsAcked) if (!alarmSet.has(v)) out.lostAlarms.push(v);
  }
  return out;
}

export const totalAcked = (ts: DeviceTally[]) => ts.reduce((n, t) => n + t.acked.size + t.alarmsAcked.size, 0);
