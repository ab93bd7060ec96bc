// Test and benchmark helpers for the edge: a manual clock, a real Mosquitto process on a free
// port, a stand-in centre that sends receipts, and a scripted DeviceDriver kit (for where the
// device itself is not what is under test).
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { eventBatchSchema, parsePayload, readingBatchSchema, toSeqRanges, type Clock } from '../contract/index.ts';
import type { DeviceDriver, DeviceHealth, DeviceSpec, Observation } from '../device-drivers/types.ts';
import type { DriverKit, ProfileInfo } from './drivers.ts';
import { freePort } from '../device-drivers/index.ts';

/** A clock that moves only when told to; timers fire in time order during advance(). */
export interface ManualClock extends Clock {
  advance(ms: number): Promise<void>;
  pending(): number;
}

export function createManualClock(start = 1_750_000_000_000): ManualClock {
  let now = start;
  let nextId = 1;
  const timers = new Map<number, { at: number; fn: () => void; every?: number }>();
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: now + Math.max(0, ms), fn });
      return id;
    },
    clearTimeout: (h) => void timers.delete(h as number),
    setInterval(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: now + Math.max(1, ms), fn, every: Math.max(1, ms) });
      return id;
    },
    clearInterval: (h) => void timers.delete(h as number),
    pending: () => timers.size,
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        let id = -1;
        let t: { at: number; fn: () => void; every?: number } | undefined;
        for (const [k, v] of timers) if (v.at <= end && (!t || v.at < t.at || (v.at === t.at && k < id))) { id = k; t = v; }
        if (!t) break;
        now = Math.max(now, t.at);
        if (t.every) t.at += t.every;
        else timers.delete(id);
        t.fn();
        // let promise chains started by the timer (polls) settle before the next one fires
        for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      }
      now = end;
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    },
  };
}

export { freePort };

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => { c.destroy(); resolve(true); });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`mosquitto did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface MosquittoHandle {
  port: number;
  url: string;
  /** (re)start the broker process on the same port; persistent sessions survive a restart */
  start(): Promise<void>;
  /** SIGTERM (mosquitto saves its sessions), wait for exit */
  stop(): Promise<void>;
  running(): boolean;
  process(): ChildProcess | null;
}

/** A real Mosquitto broker (Debian's mosquitto 2.0) with persistence in `dir`. */
export async function startMosquitto(dir: string, opts: { port?: number; extraConfig?: string[] } = {}): Promise<MosquittoHandle> {
  const port = opts.port ?? (await freePort());
  mkdirSync(join(dir, 'db'), { recursive: true });
  // Started as root, mosquitto drops to the `mosquitto` user: it must be able to write its
  // persistence file, or sessions silently do not survive a restart.
  chmodSync(dir, 0o777);
  chmodSync(join(dir, 'db'), 0o777);
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence true',
      `persistence_location ${join(dir, 'db')}/`,
      'autosave_interval 1',
      'max_queued_messages 0',
      'max_inflight_messages 0',
      'log_dest none',
      ...(opts.extraConfig ?? []),
    ].join('\n') + '\n',
  );
  let child: ChildProcess | null = null;
  const h: MosquittoHandle = {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    async start() {
      if (child) return;
      child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
      const c = child;
      c.once('exit', () => { if (child === c) child = null; });
      await waitForPort(port, 10_000);
    },
    async stop() {
      const c = child;
      if (!c) return;
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve());
        c.kill('SIGTERM');
      });
      child = null;
    },
    running: () => child !== null,
    process: () => child,
  };
  await h.start();
  return h;
}

export const scriptedProfile = (id: string, over: Partial<ProfileInfo['poll']> = {}, protocol = 'modbus'): ProfileInfo => ({
  id,
  protocol,
  poll: { interval: 1000, deadband: {}, integrity: 60_000, ...over },
});

export interface ScriptedDevice {
  /** what the next poll returns (a function of the poll number) */
  poll?: (n: number, now: number) => Observation[];
  /** push device: the test calls push() */
  push?: boolean;
  /** poll throws / health offline while true */
  failing?: boolean;
  writes: Array<{ point: string; value: unknown }>;
  pushFn?: (o: Observation) => void;
}

/**
 * A DriverKit whose drivers follow a script: used where the device is not what is under test
 * (the buffer, the uplink, the scheduler). Real drivers are tested in device-drivers/.
 */
export function scriptedKit(profiles: ProfileInfo[], devices: Record<string, ScriptedDevice>, clock: Clock): DriverKit {
  return {
    loadProfiles: async () => profiles,
    async createDriver(spec: DeviceSpec): Promise<DeviceDriver> {
      const dev = devices[spec.id];
      if (!dev) throw Object.assign(new Error(`no scripted device ${spec.id}`), { code: 'unreachable', retryable: true });
      let n = 0;
      const health: DeviceHealth = { state: 'online', lastSeen: null, consecutiveFailures: 0, timeouts: 0, errors: 0, crcErrors: 0, lastError: null };
      const driver: DeviceDriver = {
        spec,
        health: () => ({ ...health }),
        async write(point, value) {
          dev.writes.push({ point, value });
        },
        async close() {},
      };
      if (dev.poll) {
        driver.poll = async () => {
          if (dev.failing) {
            health.consecutiveFailures++;
            health.errors++;
            health.lastError = 'timeout (scripted)';
            health.state = health.consecutiveFailures >= 3 ? 'offline' : 'degraded';
            return [];
          }
          health.consecutiveFailures = 0;
          health.state = 'online';
          health.lastSeen = clock.now();
          return dev.poll!(n++, clock.now());
        };
      }
      if (dev.push) {
        driver.subscribe = async (fn) => {
          dev.pushFn = (o) => {
            health.lastSeen = clock.now();
            fn(o);
          };
        };
      }
      return driver;
    },
  };
}

export interface ReceiptResponder {
  client: MqttClient;
  /** batches received per gateway id (every copy) */
  batches: Map<string, number>;
  /** seqs received per gateway id */
  received: Map<string, Set<number>>;
  /** seqs receipted per gateway id */
  receipted: Map<string, Set<number>>;
  /** false: take batches (PUBACK) but send no receipt, as a centre that stored nothing */
  receipting: boolean;
  /** receipt everything received so far and not yet receipted */
  receiptPending(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A stand-in for the centre where no ingest worker runs: it subscribes to the gateways' readings
 * and events (all of them, or `filter`) and answers each batch with a receipt naming its seqs on
 * the gateway's own `…/receipt` topic (docs/delivery.md), as a worker does after its commit.
 */
export async function startReceiptResponder(brokerUrl: string, opts: { filter?: string; clientId?: string; clean?: boolean } = {}): Promise<ReceiptResponder> {
  const client = await mqtt.connectAsync(brokerUrl, {
    clientId: opts.clientId ?? `receipts-${Math.random().toString(16).slice(2)}`,
    clean: opts.clean ?? true,
    reconnectPeriod: 200,
  });
  const r: ReceiptResponder = {
    client,
    batches: new Map(),
    received: new Map(),
    receipted: new Map(),
    receipting: true,
    async receiptPending() {
      for (const [gw, seqs] of r.received) {
        const done = r.receipted.get(gw) ?? new Set<number>();
        const todo = [...seqs].filter((s) => !done.has(s));
        if (todo.length) await send(gatewayTopic.get(gw)!, gw, todo);
      }
    },
    close: () => client.endAsync(true),
  };
  const gatewayTopic = new Map<string, string>();
  const send = async (topic: string, gateway: string, seqs: number[]) => {
    const set = r.receipted.get(gateway) ?? new Set<number>();
    r.receipted.set(gateway, set);
    for (const s of seqs) set.add(s);
    await client.publishAsync(topic, JSON.stringify({ v: 1, gateway, ts: Date.now(), seqs: toSeqRanges(seqs) }), { qos: 1 });
  };
  client.on('message', (topic, payload) => {
    const channel = topic.slice(topic.lastIndexOf('/') + 1);
    const parsed = channel === 'readings' ? parsePayload(readingBatchSchema, payload) : channel === 'events' ? parsePayload(eventBatchSchema, payload) : null;
    if (!parsed?.ok) return;
    const batch = parsed.value as { gateway: string; readings?: Array<{ seq: number }>; events?: Array<{ seq: number }> };
    const seqs = (batch.readings ?? batch.events ?? []).map((x) => x.seq);
    const receiptTopic = topic.slice(0, topic.lastIndexOf('/') + 1) + 'receipt';
    gatewayTopic.set(batch.gateway, receiptTopic);
    r.batches.set(batch.gateway, (r.batches.get(batch.gateway) ?? 0) + 1);
    const got = r.received.get(batch.gateway) ?? new Set<number>();
    r.received.set(batch.gateway, got);
    for (const s of seqs) got.add(s);
    if (r.receipting) void send(receiptTopic, batch.gateway, seqs).catch(() => {});
  });
  const filter = opts.filter ?? 'xiaoan/v1/+/+/+/+';
  await client.subscribeAsync([`${filter}/readings`, `${filter}/events`], { qos: 1 });
  return r;
}
