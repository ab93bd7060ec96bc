// The uplink: MQTT QoS 1 to the central broker with a persistent session (clean: false, client
// id = gateway id). It pumps the durable buffer: alarms first, then the backlog oldest first at a
// bounded rate, a window of batches awaiting PUBACK; a batch leaves the buffer only on PUBACK.
// A retained birth message on connect; the broker publishes the last will (offline) if we vanish.
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { MAX_BATCH, type Clock, type DeviceEvent, type GatewayStatus, type Logger, type Reading } from '../contract/index.ts';
import type { Lane, RecordBuffer } from './buffer.ts';

export type UplinkState = 'connecting' | 'connected' | 'disconnected' | 'stopped';

export interface UplinkTopics {
  readings: string;
  events: string;
  status: string;
  /** subscription filter for our own commands, e.g. …/gw-1/cmd/# */
  commands: string;
  commandResults: string;
}

export interface UplinkOptions {
  url: string;
  gatewayId: string;
  username: string;
  password?: string;
  tls?: { ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean };
  keepaliveSeconds: number;
  reconnectMs: number;
  batchSize: number;
  inflight: number;
  maxRecordsPerSecond: number;
  topics: UplinkTopics;
  buffer: RecordBuffer;
  clock: Clock;
  log: Logger;
  /** the birth status (online, devices, buffer) sent retained on every connect */
  birth(): GatewayStatus;
  onCommand(topic: string, payload: Buffer): void;
  /** false while the device states are not known yet (just started): the birth waits for publishBirth() */
  birthReady?(): boolean;
  /** called on every (re)connect, before the backlog is pumped */
  onConnected?(): void;
}

export interface UplinkStats {
  state: UplinkState;
  connects: number;
  disconnects: number;
  batchesSent: number;
  recordsAcked: number;
  alarmsSent: number;
  inflightBatches: number;
  publishErrors: number;
  lastConnectedAt: number | null;
  lastError: string | null;
}

export interface Uplink {
  /** new records are in the buffer: send what may be sent */
  wake(): void;
  state(): UplinkState;
  stats(): UplinkStats;
  publishBirth(): Promise<void>;
  publishResult(payload: unknown): Promise<void>;
  /** graceful: publishes offline (retained) and disconnects; unacked records stay buffered */
  stop(): Promise<void>;
}

export async function startUplink(o: UplinkOptions): Promise<Uplink> {
  const batchSize = Math.min(o.batchSize, MAX_BATCH);
  const offline = (): GatewayStatus => ({ v: 1, gateway: o.gatewayId, state: 'offline', ts: o.clock.now() });
  const opts: IClientOptions = {
    clientId: o.gatewayId,
    username: o.username,
    password: o.password,
    clean: false,
    protocolVersion: 4,
    keepalive: o.keepaliveSeconds,
    reconnectPeriod: o.reconnectMs,
    connectTimeout: 10_000,
    resubscribe: true,
    will: { topic: o.topics.status, payload: Buffer.from(JSON.stringify(offline())), qos: 1, retain: true },
  };
  if (o.tls) {
    if (o.tls.ca) opts.ca = readFileSync(o.tls.ca);
    if (o.tls.cert) opts.cert = readFileSync(o.tls.cert);
    if (o.tls.key) opts.key = readFileSync(o.tls.key);
    opts.rejectUnauthorized = o.tls.rejectUnauthorized;
  }

  let state: UplinkState = 'connecting';
  const s: UplinkStats = {
    state,
    connects: 0,
    disconnects: 0,
    batchesSent: 0,
    recordsAcked: 0,
    alarmsSent: 0,
    inflightBatches: 0,
    publishErrors: 0,
    lastConnectedAt: null,
    lastError: null,
  };
  // Cursors: the highest seq handed to MQTT so far, per lane. Records at or below a cursor are
  // in flight (MQTT.js keeps and resends them across reconnects) or already acknowledged.
  let alarmCursor = 0;
  let routineCursor = 0;
  let inflight = 0;
  let pumping = false;
  let stopped = false;
  // token bucket for bounded replay
  let tokens = o.maxRecordsPerSecond;
  let refilledAt = o.clock.now();
  let refillTimer: unknown = null;

  const client: MqttClient = mqtt.connect(o.url, opts);

  const publish = (topic: string, payload: string, lane: Lane, from: number, to: number, count: number) => {
    const alarm = lane === 'alarm';
    inflight++;
    s.inflightBatches = inflight;
    s.batchesSent++;
    if (alarm) s.alarmsSent += count;
    client.publish(topic, payload, { qos: 1 }, (err) => {
      inflight--;
      s.inflightBatches = inflight;
      if (err) {
        s.publishErrors++;
        s.lastError = err.message;
        // Not acknowledged: read these again from the buffer (ingest deduplicates by seq).
        if (alarm) alarmCursor = Math.min(alarmCursor, from - 1);
        else routineCursor = Math.min(routineCursor, from - 1);
        if (!stopped) o.log.warn('publish not acknowledged; records stay buffered', { error: err.message, records: count });
        return;
      }
      try {
        o.buffer.ackRange(lane, from, to);
        s.recordsAcked += count;
      } catch (e) {
        o.log.error('could not remove acknowledged records from the buffer', { error: (e as Error).message });
      }
      pump();
    });
  };

  const batchPayload = (kind: 'readings' | 'events', records: Reading[] | DeviceEvent[]) =>
    JSON.stringify({ v: 1, gateway: o.gatewayId, sentAt: o.clock.now(), [kind]: records });

  const refill = () => {
    const now = o.clock.now();
    tokens = Math.min(o.maxRecordsPerSecond, tokens + ((now - refilledAt) * o.maxRecordsPerSecond) / 1000);
    refilledAt = now;
  };

  function pump(): void {
    if (pumping || stopped || state !== 'connected') return;
    pumping = true;
    try {
      for (;;) {
        // 1. alarms: never wait behind the backlog, never rate-limited
        const alarms = o.buffer.takeAlarms(alarmCursor, batchSize);
        if (alarms.length) {
          alarmCursor = alarms[alarms.length - 1]!.seq;
          publish(o.topics.events, batchPayload('events', alarms), 'alarm', alarms[0]!.seq, alarmCursor, alarms.length);
          continue;
        }
        // 2. the backlog, oldest first, bounded by the window and the rate
        if (inflight >= o.inflight) break;
        refill();
        if (tokens < 1) {
          if (!refillTimer) {
            const wait = Math.max(1, Math.ceil(((1 - tokens) * 1000) / o.maxRecordsPerSecond));
            refillTimer = o.clock.setTimeout(() => {
              refillTimer = null;
              pump();
            }, Math.max(wait, 10));
          }
          break;
        }
        const n = Math.max(1, Math.min(batchSize, Math.floor(tokens)));
        const batch = o.buffer.takeRoutine(routineCursor, n);
        if (!batch) break;
        routineCursor = batch.lastSeq;
        tokens -= batch.readings.length + batch.events.length;
        const ev = batch.events;
        const rd = batch.readings;
        if (ev.length) publish(o.topics.events, batchPayload('events', ev), 'event', ev[0]!.seq, ev[ev.length - 1]!.seq, ev.length);
        if (rd.length) publish(o.topics.readings, batchPayload('readings', rd), 'reading', rd[0]!.seq, rd[rd.length - 1]!.seq, rd.length);
      }
    } catch (e) {
      o.log.error('uplink pump failed', { error: (e as Error).message });
    } finally {
      pumping = false;
    }
  }

  const publishBirth = () =>
    new Promise<void>((resolve, reject) => {
      client.publish(o.topics.status, JSON.stringify(o.birth()), { qos: 1, retain: true }, (err) => (err ? reject(err) : resolve()));
    });

  client.on('connect', (connack) => {
    state = s.state = 'connected';
    s.connects++;
    s.lastConnectedAt = o.clock.now();
    o.log.info('uplink connected', { url: o.url, sessionPresent: connack.sessionPresent });
    client.subscribe(o.topics.commands, { qos: 1 }, (err) => {
      if (err) o.log.error('could not subscribe to commands', { error: err.message });
    });
    if (o.birthReady?.() !== false) publishBirth().catch((e) => o.log.warn('birth not acknowledged', { error: (e as Error).message }));
    try {
      o.onConnected?.();
    } catch (e) {
      o.log.error('onConnected failed', { error: (e as Error).message });
    }
    pump();
  });
  client.on('close', () => {
    if (state === 'connected') {
      s.disconnects++;
      o.log.warn('uplink disconnected; buffering', { depth: o.buffer.stats().depth });
    }
    if (!stopped) state = s.state = 'disconnected';
  });
  client.on('reconnect', () => {
    if (!stopped) state = s.state = 'connecting';
  });
  // during an outage every reconnect attempt fails the same way: log a repeated error once per 5 minutes
  let lastLogged = { message: '', at: 0 };
  client.on('error', (e) => {
    s.lastError = e.message;
    const now = o.clock.now();
    if (e.message === lastLogged.message && now - lastLogged.at < 300_000) return;
    lastLogged = { message: e.message, at: now };
    o.log.warn('uplink error; retrying', { error: e.message, code: (e as { code?: string | number }).code, retryMs: o.reconnectMs, buffered: o.buffer.stats().depth });
  });
  client.on('message', (topic, payload) => {
    try {
      o.onCommand(topic, payload);
    } catch (e) {
      o.log.error('command handler failed', { topic, error: (e as Error).message });
    }
  });

  return {
    wake: pump,
    state: () => state,
    stats: () => ({ ...s, state }),
    publishBirth,
    publishResult: (payload) =>
      new Promise<void>((resolve, reject) => {
        client.publish(o.topics.commandResults, JSON.stringify(payload), { qos: 1 }, (err) => (err ? reject(err) : resolve()));
      }),
    async stop() {
      if (stopped) return;
      if (refillTimer) o.clock.clearTimeout(refillTimer);
      if (state === 'connected') {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 2000);
          client.publish(o.topics.status, JSON.stringify(offline()), { qos: 1, retain: true }, () => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      stopped = true;
      state = s.state = 'stopped';
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => client.end(true, () => resolve()), 3000);
        client.end(false, () => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}
