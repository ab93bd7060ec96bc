// Helpers for the edge fault tests: a real gateway process (`xiaoan edge --config FILE`), a real
// Mosquitto as the uplink broker, a device publishing through the gateway's device broker with
// the real MQTT driver (a site profile from XIAOAN_PROFILES), and a verifying subscriber that
// deduplicates by (gateway, seq) like ingest does and, as the stand-in centre, sends receipts.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { buildTopic, eventBatchSchema, gatewayStatusSchema, parsePayload, readingBatchSchema, toSeqRanges, type DeviceEvent, type GatewayStatus, type Reading } from '../contract/index.ts';
import { freePort } from '../edge/index.ts';

export const COUNTY = '370102';
export const SITE = '37/3701/370102/3737000001';
export const DEVICE_PASSWORD = 'burst-device-pw';

/** A site profile: an MQTT counter device (readings) that can also raise an alarm. */
/** A site profile (id `burst-counter-test`): an MQTT counter device with alarm and note topics; the chaos harness uses it too. */
export const COUNTER_PROFILE = `id: burst-counter-test
protocol: mqtt
category: emergency
description: { zh: 测试计数器, en: Test counter device }
poll: { interval: 60s, integrity: 5m }
mqtt:
  messages:
    - topic: state
      readings:
        - { metric: counter, field: n }
    - topic: alarm
      event: { type: button.pressed, priority: alarm, data: { n: n } }
    - topic: note
      event: { type: device.note, priority: normal, data: { n: n } }
`;

export interface GatewaySetup {
  dir: string;
  configFile: string;
  gatewayId: string;
  httpPort: number;
  deviceBrokerPort: number;
  env: NodeJS.ProcessEnv;
}

export async function gatewaySetup(uplinkUrl: string, over: { buffer?: Record<string, unknown>; uplink?: Record<string, unknown> } = {}): Promise<GatewaySetup> {
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-edge-fault-'));
  mkdirSync(join(dir, 'profiles'));
  writeFileSync(join(dir, 'profiles', 'burst-counter-test.yaml'), COUNTER_PROFILE);
  const gatewayId = `gw-fault-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
  const httpPort = await freePort();
  const deviceBrokerPort = await freePort();
  const config = {
    tier: 'edge',
    gatewayId,
    county: COUNTY,
    site: SITE,
    uplink: { url: uplinkUrl, password: 'gw-password', reconnectMs: 300, ...over.uplink },
    dataDir: join(dir, 'data'),
    deviceBroker: { port: deviceBrokerPort, host: '127.0.0.1' },
    http: { port: httpPort, host: '127.0.0.1' },
    devices: [{ id: 'burst-1', profile: 'burst-counter-test', url: 'mqtt://burst-1', password: DEVICE_PASSWORD }],
    buffer: { replayPerSecond: 50_000, ...over.buffer },
    logLevel: 'warn',
  };
  const configFile = join(dir, 'gateway.json');
  writeFileSync(configFile, JSON.stringify(config, null, 1));
  return { dir, configFile, gatewayId, httpPort, deviceBrokerPort, env: { ...process.env, XIAOAN_PROFILES: join(dir, 'profiles'), XIAOAN_LOG_LEVEL: 'warn' } };
}

export interface GatewayProcess {
  child: ChildProcess;
  exited: Promise<number | null>;
  stderr(): string;
}

/** `node bin/xiaoan.js edge --config FILE`; resolves when it printed its start line. */
export async function startGatewayProcess(s: GatewaySetup): Promise<GatewayProcess> {
  const child = spawn(process.execPath, ['bin/xiaoan.js', 'edge', '--config', s.configFile], { cwd: process.cwd(), env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-20_000)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`gateway did not start within 30 s:\n${err}`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"gateway"')) {
        clearTimeout(t);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(t);
      reject(new Error(`gateway exited (${code}) before it started:\n${err}`));
    });
  });
  return { child, exited, stderr: () => err };
}

export async function httpJson(port: number, path: string): Promise<unknown> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return path === '/metrics' ? r.text() : r.json();
}

export function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** A device on the gateway's device broker. */
export async function connectDevice(s: GatewaySetup): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${s.deviceBrokerPort}`, {
    clientId: `burst-1-${Math.random().toString(16).slice(2)}`,
    username: 'burst-1',
    password: DEVICE_PASSWORD,
    reconnectPeriod: 0,
  });
}

/**
 * Publish counter values (QoS 2 unless told), `window` at a time; `acked` gets each value whose
 * PUBCOMP (PUBACK) came back. The gateway's device broker acknowledges only once the reading is
 * in its buffer (docs/delivery.md), so an acknowledged value is a value the gateway had on disk.
 */
export async function publishCounter(dev: MqttClient, from: number, to: number, acked: Set<number>, opts: { window?: number; stop?: () => boolean; qos?: 1 | 2 } = {}): Promise<void> {
  const window = opts.window ?? 50;
  let next = from;
  const worker = async () => {
    while (next < to && !opts.stop?.()) {
      const n = next++;
      try {
        await dev.publishAsync('devices/burst-1/state', JSON.stringify({ n }), { qos: opts.qos ?? 2 });
        acked.add(n);
      } catch {
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
}

export interface Verifier {
  client: MqttClient;
  /** seq → record, first copy */
  readings: Map<number, Reading>;
  events: Map<number, DeviceEvent>;
  /** arrival order of first copies: `r:seq` / `e:seq` */
  order: string[];
  duplicates: number;
  /** same seq delivered with different content: must stay 0 */
  conflicts: string[];
  statuses: GatewayStatus[];
  /** receipts sent (one per batch received) */
  receipts: number;
  close(): Promise<void>;
}

/**
 * A subscriber with a persistent session (QoS 1), deduplicating by (gateway, seq) like ingest,
 * that answers every batch with a receipt naming its seqs, as the centre does after its commit.
 */
export async function startVerifier(brokerUrl: string, gatewayId: string, opts: { receipts?: boolean } = {}): Promise<Verifier> {
  const base = buildTopic({ county: COUNTY, gatewayId, channel: 'readings' }).replace(/\/readings$/, '');
  const v: Verifier = {
    client: await mqtt.connectAsync(brokerUrl, { clientId: `verify-${gatewayId}`, clean: false, reconnectPeriod: 200 }),
    readings: new Map(),
    events: new Map(),
    order: [],
    duplicates: 0,
    conflicts: [],
    statuses: [],
    receipts: 0,
    close: async () => {
      await v.client.endAsync(true);
    },
  };
  const take = <T extends { seq: number }>(map: Map<number, T>, rec: T, tag: string) => {
    const prev = map.get(rec.seq);
    if (prev) {
      v.duplicates++;
      if (JSON.stringify(prev) !== JSON.stringify(rec)) v.conflicts.push(`${tag}${rec.seq}`);
      return;
    }
    map.set(rec.seq, rec);
    v.order.push(`${tag}${rec.seq}`);
  };
  if (process.env.XIAOAN_TEST_TRACE) {
    v.client.on('connect', (c) => console.log('verifier connect sessionPresent', c.sessionPresent));
    v.client.on('message', (topic, payload) => console.log('verifier got', topic, payload.length));
  }
  const receipt = (seqs: number[]) => {
    if (opts.receipts === false || seqs.length === 0) return;
    v.receipts++;
    v.client.publish(`${base}/receipt`, JSON.stringify({ v: 1, gateway: gatewayId, ts: Date.now(), seqs: toSeqRanges(seqs) }), { qos: 1 });
  };
  v.client.on('message', (topic, payload) => {
    const ch = topic.slice(base.length + 1);
    if (ch === 'readings') {
      const r = parsePayload(readingBatchSchema, payload);
      if (!r.ok) v.conflicts.push(`bad batch: ${r.error}`);
      else for (const x of r.value.readings) take(v.readings, x, 'r:');
      if (r.ok) receipt(r.value.readings.map((x) => x.seq));
    } else if (ch === 'events') {
      const r = parsePayload(eventBatchSchema, payload);
      if (!r.ok) v.conflicts.push(`bad batch: ${r.error}`);
      else for (const x of r.value.events) take(v.events, x, 'e:');
      if (r.ok) receipt(r.value.events.map((x) => x.seq));
    } else if (ch === 'status') {
      const r = parsePayload(gatewayStatusSchema, payload);
      if (r.ok) v.statuses.push(r.value);
    }
  });
  await v.client.subscribeAsync(`${base}/+`, { qos: 1 });
  return v;
}

export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function counterValues(v: Verifier): number[] {
  return [...v.readings.values()].filter((r) => r.metric === 'counter').map((r) => r.value);
}
