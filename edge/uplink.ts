// The uplink: MQTT QoS 1 to the central broker with a persistent session (clean: false, client
// id = gateway id). It pumps the durable buffer: alarms first, then the backlog oldest first at a
// bounded rate. Custody (docs/delivery.md): a record leaves the buffer only when the centre's
// receipt on `…/{gatewayId}/receipt` names its seq; a PUBACK only frees the MQTT window. At most
// `inflight` batches per lane group wait for a receipt; one without a receipt after
// `receiptTimeoutMs` is published again (what of it is still buffered). Every batch carries
// `floor`, the lowest seq still buffered. A retained birth message on connect; the broker
// publishes the last will (offline) if we vanish.
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { MAX_BATCH, parsePayload, receiptSchema, type Clock, type DeviceEvent, type GatewayStatus, type Logger, type Reading } from '../contract/index.ts';
import type { Lane, RecordBuffer } from './buffer.ts';
import { CustodyTracker, type OutstandingBatch } from './custody.ts';

export type UplinkState = 'connecting' | 'connected' | 'disconnected' | 'stopped';

export interface UplinkTopics {
  readings: string;
  events: string;
  status: string;
  /** subscription filter for our own commands, e.g. …/gw-1/cmd/# */
  commands: string;
  commandResults: string;
  /** our own receipts, …/gw-1/receipt */
  receipts: string;
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
  /** batches awaiting a receipt per lane group (alarms, routine) */
  inflight: number;
  /** a batch without a receipt this long after it was sent is sent again */
  receiptTimeoutMs: number;
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
  alarmsSent: number;
  /** batches awaiting PUBACK (the MQTT window) */
  inflightBatches: number;
  /** batches awaiting a receipt */
  awaitingReceipt: number;
  receipts: number;
  /** receipts that were not valid (logged, ignored) */
  badReceipts: number;
  /** records deleted from the buffer because a receipt named them */
  recordsConfirmed: number;
  /** batches published again for want of a receipt */
  resends: number;
  /** ms since the oldest batch still without a receipt was first sent, 0 when none */
  oldestUnconfirmedMs: number;
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
  /** graceful: publishes offline (retained) and disconnects; records without a receipt stay buffered */
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
  const s: Omit<UplinkStats, 'awaitingReceipt' | 'oldestUnconfirmedMs'> = {
    state,
    connects: 0,
    disconnects: 0,
    batchesSent: 0,
    alarmsSent: 0,
    inflightBatches: 0,
    receipts: 0,
    badReceipts: 0,
    recordsConfirmed: 0,
    resends: 0,
    publishErrors: 0,
    lastConnectedAt: null,
    lastError: null,
  };
  // Cursors: the highest seq published so far, per lane. Records above a cursor have never been
  // sent; those at or below it are awaiting a receipt (tracked by `custody`) or confirmed.
  let alarmCursor = 0;
  let routineCursor = 0;
  let pumping = false;
  let stopped = false;
  // token bucket for bounded replay
  let tokens = o.maxRecordsPerSecond;
  let refilledAt = o.clock.now();
  let refillTimer: unknown = null;
  const custody = new CustodyTracker(o.clock, o.receiptTimeoutMs, () => resendDue());

  const client: MqttClient = mqtt.connect(o.url, opts);

  /** one batch of one lane on the wire; `resend` names the outstanding batch it repeats */
  const publish = (lane: Lane, records: Reading[] | DeviceEvent[], resend?: OutstandingBatch) => {
    const kind = lane === 'reading' ? 'readings' : 'events';
    const seqs = records.map((r) => r.seq);
    // floor: the lowest seq still buffered, never above this batch's own (docs/delivery.md)
    const floor = Math.min(o.buffer.floor(), seqs[0]!);
    const payload = JSON.stringify({ v: 1, gateway: o.gatewayId, sentAt: o.clock.now(), floor, [kind]: records });
    if (resend) {
      custody.resent(resend.id, seqs);
      s.resends++;
    } else custody.sent(lane, seqs);
    s.inflightBatches++;
    s.batchesSent++;
    if (lane === 'alarm') s.alarmsSent += records.length;
    client.publish(kind === 'readings' ? o.topics.readings : o.topics.events, payload, { qos: 1 }, (err) => {
      s.inflightBatches--;
      if (err) {
        // still awaiting its receipt: sent again after receiptTimeoutMs
        s.publishErrors++;
        s.lastError = err.message;
        if (!stopped) o.log.warn('publish not acknowledged by the broker; records stay buffered', { error: err.message, records: records.length });
      }
    });
  };

  /** publish again what of each due (or given) batch is still buffered, alarms first */
  function resend(batches: OutstandingBatch[]): void {
    for (const b of batches) {
      const records = o.buffer.read(b.seqs);
      if (records.length === 0) {
        custody.resent(b.id, []);
        continue;
      }
      // a batch never grows: what is left of it fits one message
      publish(b.lane, records as Reading[] | DeviceEvent[], b);
    }
  }

  function resendDue(): void {
    if (stopped || state !== 'connected') return; // on reconnect
    try {
      const due = custody.due();
      if (due.length) o.log.warn('no receipt in time; sending again', { batches: due.length, receiptTimeoutMs: o.receiptTimeoutMs });
      // routine records never go out again ahead of an alarm still without a receipt: the alarms
      // (due or not yet) go first in the same breath, so the centre stores them before the backlog
      const alarmsToo = due.some((b) => b.lane !== 'alarm') ? custody.alarms().filter((a) => !due.includes(a)) : [];
      resend([...alarmsToo, ...due].sort((a, b) => (a.lane === 'alarm' ? 0 : 1) - (b.lane === 'alarm' ? 0 : 1)));
    } catch (e) {
      o.log.error('resend failed', { error: (e as Error).message });
    }
    pump(); // a batch with nothing left to send frees its place in the window
  }

  function onReceipt(payload: Buffer): void {
    const r = parsePayload(receiptSchema, payload);
    if (!r.ok || r.value.gateway !== o.gatewayId) {
      s.badReceipts++;
      o.log.warn('回执无效，已忽略 invalid receipt ignored', { error: r.ok ? `receipt for gateway "${r.value.gateway}", not ${o.gatewayId}` : r.error });
      return;
    }
    s.receipts++;
    const ranges = [...r.value.seqs].sort((a, b) => a[0] - b[0]);
    s.recordsConfirmed += o.buffer.confirm(ranges);
    custody.confirm(ranges);
    pump();
  }

  const refill = () => {
    const now = o.clock.now();
    tokens = Math.min(o.maxRecordsPerSecond, tokens + ((now - refilledAt) * o.maxRecordsPerSecond) / 1000);
    refilledAt = now;
  };

  /** false when the bucket is empty (a timer will pump again) */
  function haveTokens(): boolean {
    refill();
    if (tokens >= 1) return true;
    if (!refillTimer) {
      const wait = Math.max(1, Math.ceil(((1 - tokens) * 1000) / o.maxRecordsPerSecond));
      refillTimer = o.clock.setTimeout(() => {
        refillTimer = null;
        pump();
      }, Math.max(wait, 10));
    }
    return false;
  }

  function pump(): void {
    if (pumping || stopped || state !== 'connected') return;
    pumping = true;
    try {
      for (;;) {
        // 1. alarms: their own window, never behind the backlog, never rate-limited
        if (custody.count('alarm') < o.inflight) {
          const alarms = o.buffer.takeAlarms(alarmCursor, batchSize);
          if (alarms.length) {
            alarmCursor = alarms[alarms.length - 1]!.seq;
            publish('alarm', alarms);
            continue;
          }
        }
        // 2. the backlog, oldest first, bounded by the window and the rate
        if (custody.count('routine') >= o.inflight || !haveTokens()) break;
        const batch = o.buffer.takeRoutine(routineCursor, Math.max(1, Math.min(batchSize, Math.floor(tokens))));
        if (!batch) break;
        routineCursor = batch.lastSeq;
        tokens -= batch.readings.length + batch.events.length;
        if (batch.events.length) publish('event', batch.events);
        if (batch.readings.length) publish('reading', batch.readings);
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
    client.subscribe([o.topics.commands, o.topics.receipts], { qos: 1 }, (err, granted) => {
      if (err) o.log.error('could not subscribe to commands and receipts', { error: err.message });
      else if (granted?.some((g) => g.qos === 128)) o.log.error('代理拒绝订阅 the broker refused a subscription; check its ACL for this gateway', { refused: granted.filter((g) => g.qos === 128).map((g) => g.topic) });
    });
    if (o.birthReady?.() !== false) publishBirth().catch((e) => o.log.warn('birth not acknowledged', { error: (e as Error).message }));
    try {
      o.onConnected?.();
    } catch (e) {
      o.log.error('onConnected failed', { error: (e as Error).message });
    }
    // alarms without a receipt go first, then whatever else is due, then the backlog
    try {
      resend(custody.alarms());
    } catch (e) {
      o.log.error('resend failed', { error: (e as Error).message });
    }
    resendDue();
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
      if (topic === o.topics.receipts) onReceipt(payload);
      else o.onCommand(topic, payload);
    } catch (e) {
      o.log.error(topic === o.topics.receipts ? 'receipt handling failed' : 'command handler failed', { topic, error: (e as Error).message });
    }
  });

  const stats = (): UplinkStats => {
    const oldest = custody.oldestFirstSentAt();
    return { ...s, state, awaitingReceipt: custody.size(), oldestUnconfirmedMs: oldest === null ? 0 : Math.max(0, o.clock.now() - oldest) };
  };

  return {
    wake: pump,
    state: () => state,
    stats,
    publishBirth,
    publishResult: (payload) =>
      new Promise<void>((resolve, reject) => {
        client.publish(o.topics.commandResults, JSON.stringify(payload), { qos: 1 }, (err) => (err ? reject(err) : resolve()));
      }),
    async stop() {
      if (stopped) return;
      if (refillTimer) o.clock.clearTimeout(refillTimer);
      custody.stop();
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
