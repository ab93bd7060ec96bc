// The ingest worker: consumes one region's uplink from the broker, validates it against the
// contract, dead-letters what is wrong (with the reason and a counter), stores every record exactly
// once on (gateway, seq), acknowledges each message only after its data is committed, and then hands
// the newly stored records to the listeners (rules, InfluxDB).
//
// Three MQTT connections ("lanes") so that nothing urgent waits behind bulk:
//   events   — event batches (alarms); their own connection, their own commits
//   readings — reading batches; many messages are gathered into one COPY
//   control  — gateway status (retained; not shared, so every worker learns it at start) and
//              command results; commands are published here
// With MQTT 5, events and readings are shared subscriptions ($share/{group}/…), so several workers
// split one region. MQTT 3.1.1 brokers (the embedded aedes) get plain subscriptions.
//
// Custody (docs/delivery.md): after each commit the worker publishes on each gateway's `receipt`
// topic the seqs it now holds (stored, duplicates, records dead-lettered alone); only then does the
// gateway delete them. A gateway not registered centrally gets no receipt and no dead letter: its
// records stay on the gateway until `xiaoan gateway add` registers it.

import {
  commandResultSchema,
  commandSchema,
  describeZodError,
  gatewayStatusSchema,
  parsePayload,
  parseTopic,
  regionFilter,
  regionPath,
  buildTopic,
  parseRegionCode,
  silentLogger,
  systemClock,
  type Clock,
  type Command,
  type CommandResult,
  type DeviceEvent,
  type GatewayStatus,
  type Logger,
  type Reading,
  type Receipt,
  type TopicParts,
  MAX_BATCH,
  toSeqRanges,
  ID_PATTERN,
} from '../contract/index.ts';
import { claimWorkerIdentity, type IdentityClaim } from './identity-lock.ts';
import { Lane, type InboundMessage, type LaneState } from './mqtt-lane.ts';
import { recordKey, type NewKeys, type SinkError } from './postgres/writer.ts';
import { parseUplinkBatch, type RejectedRecord } from './uplink.ts';
import type { Store } from './store.ts';
import type { BatchListener, CommandSender, DeadLetterReason, GatewayInfo, StoredBatch } from './types.ts';

export interface IngestWorkerOptions {
  store: Store;
  brokerUrl: string;
  username: string;
  password: string;
  /** region code this worker serves: '37' (province), '3701' (city) or '370102' (county) */
  region: string;
  /** MQTT 5 shared-subscription group; workers with the same group split the region's traffic */
  shareGroup?: string;
  listeners: BatchListener[];
  log?: Logger;
  clock?: Clock;
  /**
   * This worker's name among the workers of its region (default `main`): the client ids are
   * `xiaoan-ingest-{region}-{replica}-{lane}`, stable across restarts, so the broker keeps the
   * session (1 hour) and a restarted worker receives what was queued for it meanwhile. Two workers
   * of one region need two replica names; a second worker under a taken name is refused.
   */
  replica?: string;
  /** client id prefix replacing `xiaoan-ingest-{region}-{replica}` */
  clientId?: string;
  /** 5 (default, falls back to 4 when the broker only speaks 3.1.1) or 4 */
  protocolVersion?: 4 | 5;
  batch?: {
    /** records per commit (default 20,000) */
    maxRecords?: number;
    /**
     * reading commits running at once (default 2 on PostgreSQL, 1 on PGlite). Gateways are split
     * between them by a hash of their id, so one gateway's records are committed in order and
     * concurrent commits never touch the same rollup or latest-value rows.
     */
    concurrency?: number;
    /** records of one kind held in memory before the worker stops reading that connection (default 60,000) */
    highWaterRecords?: number;
    /** unacknowledged messages the broker may have in flight to each lane (default 1,000) */
    receiveMaximum?: number;
  };
  retry?: { minMs?: number; maxMs?: number };
  /** how long a gateway lookup is trusted (default: registered 60 s, unregistered 5 s) */
  gatewayCacheMs?: { known?: number; unknown?: number };
  reconnectPeriodMs?: number;
  /** how often the rollups of closed minutes are refreshed (default 5,000 ms; 0 = never; no-op on TimescaleDB) */
  rollupEveryMs?: number;
  /** for mqtts:// brokers: PEM contents of the CA, client certificate and key */
  tls?: { ca?: Buffer | string; cert?: Buffer | string; key?: Buffer | string; rejectUnauthorized?: boolean };
}

export interface IngestStats {
  lanes: Record<'events' | 'readings' | 'control', { state: LaneState; connects: number; held: number; lastError: string | null }>;
  protocolVersion: 4 | 5;
  received: { readings: number; events: number; status: number; commandResults: number };
  stored: { readings: number; events: number };
  duplicates: { readings: number; events: number };
  deadLetters: { total: number; byReason: Record<string, number> };
  /** records of gateways not registered centrally, left on their gateway (no receipt) */
  awaitingRegistration: number;
  receipts: { published: number; failed: number };
  commits: { readings: number; events: number };
  lastCommit: { records: number; ms: number } | null;
  pendingRecords: number;
  /** retryable storage failures so far (database down, restarting…) */
  storageRetries: number;
  storage: 'ok' | 'retrying';
  listenerErrors: Record<string, number>;
  /** age of the newest stored batch when it was committed (now − sentAt), ms */
  lagMs: number | null;
}

export interface IngestWorker {
  start(): Promise<void>;
  stop(): Promise<void>;
  stats(): IngestStats;
  commands: CommandSender;
}

export class CommandTimeoutError extends Error {
  readonly retryable = true;
  constructor(readonly gatewayId: string, readonly commandId: string, ms: number) {
    super(`gateway ${gatewayId} did not answer command ${commandId} within ${ms} ms (网关未在时限内应答命令); it may be offline — try again later`);
    this.name = 'CommandTimeoutError';
  }
}

interface Pending<R extends Reading | DeviceEvent> {
  gateway: GatewayInfo;
  records: R[];
  floor?: number;
  sentAt: number;
  msg: InboundMessage;
  count: number;
  /** seqs of this message's records dead-lettered alone: in custody, receipted with the commit */
  held: number[];
}

/**
 * The receipts naming `seqs` (any order, repeats allowed) for one gateway: inclusive ranges, at most
 * MAX_BATCH ranges to a receipt (receiptSchema), so a commit with scattered seqs gets several.
 */
export function buildReceipts(gatewayId: string, seqs: Iterable<number>, ts: number): Receipt[] {
  const ranges = toSeqRanges(seqs);
  const out: Receipt[] = [];
  for (let i = 0; i < ranges.length; i += MAX_BATCH) out.push({ v: 1, gateway: gatewayId, ts, seqs: ranges.slice(i, i + MAX_BATCH) });
  return out;
}

/** The default client id prefix: stable per region and replica (docs/configuration.md). */
export function defaultClientId(region: string, replica = 'main'): string {
  return `xiaoan-ingest-${region}-${replica}`;
}

/**
 * Says at most once a minute per gateway that a gateway is not registered centrally: its records
 * wait on the gateway, so the log names what to do, not every message.
 */
export class RegistrationReminder {
  private last = new Map<string, number>();
  constructor(private clock: Clock, private everyMs: number, private say: (gatewayId: string, county: string) => void) {}
  note(gatewayId: string, county: string): void {
    const now = this.clock.now();
    const at = this.last.get(gatewayId);
    if (at !== undefined && now - at < this.everyMs) return;
    this.last.set(gatewayId, now);
    this.say(gatewayId, county);
  }
}

const GATEWAY_CACHE_MS = 60_000;
const UNKNOWN_CACHE_MS = 5_000;

export async function createIngestWorker(opts: IngestWorkerOptions): Promise<IngestWorker> {
  const log = (opts.log ?? silentLogger).child('ingest');
  const clock = opts.clock ?? systemClock;
  const store = opts.store;
  parseRegionCode(opts.region);
  const maxRecords = opts.batch?.maxRecords ?? 20_000;
  const highWater = opts.batch?.highWaterRecords ?? 60_000;
  const receiveMaximum = opts.batch?.receiveMaximum ?? 1000;
  const retryMin = opts.retry?.minMs ?? 200;
  const retryMax = opts.retry?.maxMs ?? 5_000;
  const replica = opts.replica ?? 'main';
  if (!ID_PATTERN.test(replica)) throw new Error(`replica "${replica}" must be 1–64 letters, digits, '.', '_' or '-' (副本名格式错误)`);
  const idBase = opts.clientId ?? defaultClientId(opts.region, replica);
  let identity: IdentityClaim | null = null;

  const stats = {
    received: { readings: 0, events: 0, status: 0, commandResults: 0 },
    stored: { readings: 0, events: 0 },
    duplicates: { readings: 0, events: 0 },
    deadLetters: { total: 0, byReason: {} as Record<string, number> },
    awaitingRegistration: 0,
    receipts: { published: 0, failed: 0 },
    commits: { readings: 0, events: 0 },
    lastCommit: null as { records: number; ms: number } | null,
    storageRetries: 0,
    storage: 'ok' as 'ok' | 'retrying',
    listenerErrors: {} as Record<string, number>,
    lagMs: null as number | null,
  };

  let stopping = false;
  let protocolVersion: 4 | 5 = opts.protocolVersion ?? 5;
  const lanes: Partial<Record<'events' | 'readings' | 'control', Lane>> = {};

  // ---- gateways known centrally (cached) ----
  const gatewayCache = new Map<string, { info: GatewayInfo | null; at: number }>();
  async function gatewayOf(id: string): Promise<GatewayInfo | null> {
    const c = gatewayCache.get(id);
    const now = clock.now();
    if (c && now - c.at < (c.info ? opts.gatewayCacheMs?.known ?? GATEWAY_CACHE_MS : opts.gatewayCacheMs?.unknown ?? UNKNOWN_CACHE_MS)) return c.info;
    const info = await store.getGateway(id);
    gatewayCache.set(id, { info, at: now });
    return info;
  }

  // ---- retry helper: storage faults are retried until they succeed or the worker stops ----
  const sleep = (ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms));
  async function withRetry<T>(unit: string, fn: () => Promise<T>): Promise<T> {
    let delay = retryMin;
    let failed = false;
    for (;;) {
      try {
        const out = await fn();
        if (failed) {
          if (stats.storage === 'retrying') log.info('storage back (数据库已恢复)', { unit });
          stats.storage = 'ok';
        }
        return out;
      } catch (e) {
        const err = e as SinkError;
        if (err.retryable === false || stopping) throw e;
        stats.storageRetries++;
        failed = true;
        if (stats.storage !== 'retrying') log.warn('storage unavailable; holding messages unacknowledged and retrying (数据库不可用，重试中)', { unit, error: err.message, code: err.code });
        stats.storage = 'retrying';
        await sleep(delay);
        delay = Math.min(retryMax, delay * 2);
      }
    }
  }

  // ---- dead letters ----
  /** Records a dead letter (retrying storage faults); false when the worker stops first. */
  async function keepDeadLetter(
    topic: string, reason: DeadLetterReason, detail: string, payload: Buffer | string, gatewayId: string | null, orgPath: string | null, unit: 'message' | 'record' = 'message',
  ): Promise<boolean> {
    log.warn('dead-lettered (转入死信表)', { reason, topic, detail: detail.slice(0, 300) });
    try {
      await withRetry('dead-letters', () => store.recordDeadLetter({ topic, gatewayId, orgPath, reason, detail, payload, unit }));
      // counted once it is kept, so a count seen means a row to read
      stats.deadLetters.total++;
      stats.deadLetters.byReason[reason] = (stats.deadLetters.byReason[reason] ?? 0) + 1;
      return true;
    } catch (e) {
      log.error('could not record dead letter; message left unacknowledged', { error: (e as Error).message });
      return false;
    }
  }
  async function deadLetter(m: InboundMessage, reason: DeadLetterReason, detail: string, gatewayId: string | null, orgPath: string | null) {
    if (await keepDeadLetter(m.topic, reason, detail, m.payload, gatewayId, orgPath)) m.settle();
  }
  /** Each bad record of a valid envelope alone (payload: that record); true when all are kept. */
  async function deadLetterRecords(m: InboundMessage, rejected: RejectedRecord[], gw: GatewayInfo): Promise<boolean> {
    for (const r of rejected) {
      const ok = await keepDeadLetter(m.topic, 'schema', r.detail, JSON.stringify(r.record) ?? 'null', gw.id, gw.orgPath, 'record');
      if (!ok) return false;
    }
    return true;
  }

  // ---- receipts (docs/delivery.md): after the commit, name every seq the centre now holds ----
  async function sendReceipt(gw: { id: string; county: string }, seqs: number[]): Promise<void> {
    const topic = buildTopic({ county: gw.county, gatewayId: gw.id, channel: 'receipt' });
    for (const receipt of buildReceipts(gw.id, seqs, clock.now())) {
      try {
        const lane = lanes.control;
        if (!lane) throw new Error('control connection not open');
        await lane.publish(topic, JSON.stringify(receipt), 1);
        stats.receipts.published++;
      } catch (e) {
        // The records are stored; without a receipt the gateway sends them again and the
        // duplicates get their receipt then.
        stats.receipts.failed++;
        log.warn('receipt not published; the gateway will resend and be receipted then (回执发送失败)', { gateway: gw.id, error: (e as Error).message });
      }
    }
  }
  const receiptFor = (gw: { id: string; county: string }, seqs: number[]) => void sendReceipt(gw, seqs);

  const reminder = new RegistrationReminder(clock, 60_000, (gatewayId, county) =>
    log.warn(
      'gateway not registered centrally; its records stay on the gateway until it is (网关未在中心登记，数据暂留网关)',
      { gateway: gatewayId, county, todo: `xiaoan gateway add ${gatewayId} --county ${county} --org ORG_PATH --name NAME` },
    ));

  // ---- listeners: events first, readings after, each listener its own fault unit ----
  const dispatch = {
    events: [] as StoredBatch[],
    readings: [] as StoredBatch[],
    running: false,
    waiters: [] as Array<() => void>,
  };
  const MAX_DISPATCH_BACKLOG = 64;
  async function callListeners(batch: StoredBatch) {
    for (const l of opts.listeners) {
      try {
        await l.onStored(batch);
      } catch (e) {
        stats.listenerErrors[l.name] = (stats.listenerErrors[l.name] ?? 0) + 1;
        log.child(l.name).error('listener failed on a stored batch; the batch stays stored', { error: e as Error, gateway: batch.gateway.id });
      }
    }
  }
  function enqueueStored(kind: 'events' | 'readings', b: StoredBatch) {
    dispatch[kind].push(b);
    if (dispatch.running) return;
    dispatch.running = true;
    void (async () => {
      for (;;) {
        const next = dispatch.events.shift() ?? dispatch.readings.shift();
        if (!next) break;
        await callListeners(next);
        if (dispatch.readings.length < MAX_DISPATCH_BACKLOG) {
          const w = dispatch.waiters;
          dispatch.waiters = [];
          for (const f of w) f();
        }
      }
      dispatch.running = false;
      const w = dispatch.waiters;
      dispatch.waiters = [];
      for (const f of w) f();
    })();
  }
  const listenersCaughtUp = () =>
    dispatch.readings.length < MAX_DISPATCH_BACKLOG ? Promise.resolve() : new Promise<void>((r) => dispatch.waiters.push(r));

  // ---- batching writers (one for readings, one for events, independent) ----
  // Backpressure per lane: a backlog of readings stops reading the readings connection only, so
  // alarms (their own connection) are never held behind bulk.
  const pending = { readings: 0, events: 0 };
  let pendingRecords = 0;
  const saturatedFor = (kind: 'readings' | 'events' | 'control') => () =>
    kind === 'control' ? false : pending[kind] >= highWater;
  const resumeLanes = () => {
    for (const l of Object.values(lanes)) l?.resume();
  };

  function makeWriter<R extends Reading | DeviceEvent>(kind: 'readings' | 'events') {
    const queue: Pending<R>[] = [];
    let flushing = false;
    let idle: Array<() => void> = [];

    async function write(items: Pending<R>[]): Promise<NewKeys> {
      // floor: the gateway's lowest unreceipted seq, for the writer's dedup (docs/delivery.md)
      if (kind === 'readings') {
        return store.sink.writeReadings(items.map((p) => ({ gatewayId: p.gateway.id, readings: p.records as Reading[], floor: p.floor })));
      }
      return store.sink.writeEvents(items.map((p) => ({ gatewayId: p.gateway.id, events: p.records as DeviceEvent[], floor: p.floor })));
    }

    /** One receipt per gateway of the commit: every seq of its messages, new or duplicate, and those dead-lettered alone. */
    function receipt(items: Pending<R>[]) {
      const byGateway = new Map<string, { gw: GatewayInfo; seqs: number[] }>();
      for (const p of items) {
        let g = byGateway.get(p.gateway.id);
        if (!g) byGateway.set(p.gateway.id, (g = { gw: p.gateway, seqs: [] }));
        for (const r of p.records) g.seqs.push(r.seq);
        g.seqs.push(...p.held);
      }
      for (const g of byGateway.values()) receiptFor(g.gw, g.seqs);
    }

    async function commit(items: Pending<R>[]): Promise<void> {
      const started = clock.now();
      let keys: NewKeys;
      try {
        keys = await withRetry(kind, () => write(items));
      } catch (e) {
        if (stopping) throw e;
        // Not a connection fault: the data itself was refused. Store message by message, so one
        // poison message is dead-lettered and the others are kept.
        log.warn('batch refused by the database; storing message by message', { error: (e as Error).message, code: (e as SinkError).code });
        if (items.length === 1) {
          const p = items[0]!;
          pendingRecords -= p.count;
          pending[kind] -= p.count;
          const kept = await keepDeadLetter(p.msg.topic, 'storage', `database refused the batch: ${(e as Error).message} (SQLSTATE ${(e as SinkError).code ?? '?'})`, p.msg.payload, p.gateway.id, p.gateway.orgPath);
          if (kept) {
            // kept whole as a dead letter (replayable): in custody, so receipted
            p.msg.settle();
            receipt([p]);
          }
          return;
        }
        for (const p of items) await commit([p]);
        return;
      }
      const count = items.reduce((n, p) => n + p.count, 0);
      stats.commits[kind]++;
      stats.lastCommit = { records: count, ms: clock.now() - started };
      stats.stored[kind] += keys.size;
      stats.duplicates[kind] += count - keys.size;
      stats.lagMs = clock.now() - Math.min(...items.map((p) => p.sentAt));
      pendingRecords -= count;
      pending[kind] -= count;
      for (const p of items) p.msg.settle();
      receipt(items);
      resumeLanes();
      // Listeners get only the records that were new, grouped by gateway.
      const byGateway = new Map<string, StoredBatch>();
      for (const p of items) {
        // delete as we go: a record sent twice within one commit is new only once
        const fresh = p.records.filter((r) => keys.delete(recordKey(p.gateway.id, r.seq)));
        if (fresh.length === 0) continue;
        let b = byGateway.get(p.gateway.id);
        if (!b) {
          b = { gateway: { id: p.gateway.id, orgPath: p.gateway.orgPath, county: p.gateway.county }, readings: [], events: [] };
          byGateway.set(p.gateway.id, b);
        }
        if (kind === 'readings') b.readings.push(...(fresh as Reading[]));
        else b.events.push(...(fresh as DeviceEvent[]));
      }
      for (const b of byGateway.values()) {
        if (kind === 'events') {
          // alarms first within the batch as well
          b.events.sort((x, y) => (x.priority === y.priority ? 0 : x.priority === 'alarm' ? -1 : 1));
        }
        enqueueStored(kind, b);
      }
    }

    async function loop() {
      flushing = true;
      try {
        while (queue.length > 0 && !stopping) {
          if (kind === 'readings') await listenersCaughtUp();
          const take: Pending<R>[] = [];
          let n = 0;
          while (queue.length > 0 && (take.length === 0 || n + queue[0]!.count <= maxRecords)) {
            const p = queue.shift()!;
            take.push(p);
            n += p.count;
          }
          try {
            await commit(take);
          } catch (e) {
            log.error('commit abandoned (worker stopping); messages stay unacknowledged', { error: (e as Error).message });
          }
        }
      } finally {
        flushing = false;
        const w = idle;
        idle = [];
        for (const f of w) f();
      }
    }

    return {
      push(p: Pending<R>) {
        queue.push(p);
        pendingRecords += p.count;
        pending[kind] += p.count;
        // Group commit: whatever arrives while a commit runs goes into the next one.
        if (!flushing) {
          flushing = true;
          setImmediate(() => void loop());
        }
      },
      drained(): Promise<void> {
        return !flushing && queue.length === 0 ? Promise.resolve() : new Promise((r) => idle.push(r));
      },
      size: () => queue.length,
    };
  }

  const shards = Math.max(1, Math.floor(opts.batch?.concurrency ?? (store.engine === 'postgres' ? 2 : 1)));
  const readingsWriters = Array.from({ length: shards }, () => makeWriter<Reading>('readings'));
  const shardOf = (gatewayId: string) => {
    let h = 0;
    for (let i = 0; i < gatewayId.length; i++) h = (h * 31 + gatewayId.charCodeAt(i)) | 0;
    return Math.abs(h) % shards;
  };
  const eventsWriter = makeWriter<DeviceEvent>('events');

  // ---- commands ----
  const pendingCommands = new Map<string, { gatewayId: string; resolve: (r: CommandResult) => void; reject: (e: Error) => void; timer: unknown }>();
  const commands: CommandSender = {
    async send(gatewayId, command: Command, timeoutMs = 10_000) {
      const parsed = commandSchema.safeParse(command);
      if (!parsed.success) throw new Error(`command for ${gatewayId} is not valid: ${describeZodError(parsed.error)}`);
      const gw = await gatewayOf(gatewayId);
      if (!gw) throw new Error(`gateway ${gatewayId} is not registered centrally (网关未登记); register it first`);
      const lane = lanes.control;
      if (!lane || lane.state !== 'connected') {
        throw Object.assign(new Error(`ingest worker is not connected to the broker; command ${command.id} not sent — try again`), { retryable: true });
      }
      if (pendingCommands.has(command.id)) throw new Error(`command id ${command.id} is already awaiting an answer`);
      const topic = buildTopic({ county: gw.county, gatewayId, channel: 'cmd', sub: command.kind });
      const result = new Promise<CommandResult>((resolve, reject) => {
        const timer = clock.setTimeout(() => {
          pendingCommands.delete(command.id);
          reject(new CommandTimeoutError(gatewayId, command.id, timeoutMs));
        }, timeoutMs);
        pendingCommands.set(command.id, { gatewayId, resolve, reject, timer });
      });
      try {
        await lane.publish(topic, JSON.stringify(parsed.data), 1);
      } catch (e) {
        const p = pendingCommands.get(command.id);
        if (p) {
          clock.clearTimeout(p.timer);
          pendingCommands.delete(command.id);
        }
        throw e;
      }
      log.info('command sent', { gateway: gatewayId, id: command.id, kind: command.kind });
      return result;
    },
  };

  // ---- inbound ----
  async function handle(m: InboundMessage): Promise<void> {
    let parts: TopicParts;
    try {
      parts = parseTopic(m.topic);
    } catch (e) {
      return deadLetter(m, 'topic', (e as Error).message, null, null);
    }
    const region = regionPath(parts.county);
    if (parts.channel === 'cmd-result') return handleCommandResult(m, parts);
    if (parts.channel === 'cmd' || parts.channel === 'receipt') return m.settle(); // our own downlink echoed by a broad filter
    // An empty retained message only clears a retained status: nothing to store.
    if (parts.channel === 'status' && m.payload.length === 0) return m.settle();
    let gw: GatewayInfo | null;
    try {
      gw = await withRetry('gateways', () => gatewayOf(parts.gatewayId));
    } catch (e) {
      log.error('gateway lookup failed; message left unacknowledged', { error: (e as Error).message });
      return;
    }
    // Dead letters of a known gateway belong to its school; otherwise to the topic's county.
    const where = gw && gw.county === parts.county ? gw.orgPath : region;
    if (parts.channel === 'status') return handleStatusMessage(m, parts, gw, where);
    const batch = parseUplinkBatch(parts.channel, m.payload);
    if (!batch.ok) return deadLetter(m, batch.reason, batch.detail, parts.gatewayId, where);
    const count = batch.readings.length + batch.events.length + batch.rejected.length;
    if (!gw) {
      // Unknown is not invalid: no dead letter, no receipt. The gateway keeps the records and sends
      // them again; once registered they are stored and receipted (docs/delivery.md).
      stats.awaitingRegistration += count;
      reminder.note(parts.gatewayId, parts.county);
      return m.settle();
    }
    if (batch.gateway !== parts.gatewayId) {
      return deadLetter(m, 'gateway_mismatch', `payload says gateway "${batch.gateway}" but the topic says "${parts.gatewayId}"`, parts.gatewayId, gw.orgPath);
    }
    if (parts.county !== gw.county) {
      return deadLetter(m, 'gateway_mismatch', `gateway ${gw.id} is registered in county ${gw.county}, not ${parts.county} of the topic`, gw.id, region);
    }
    // A bad record is set aside alone; the others of its batch are stored.
    if (batch.rejected.length > 0 && !(await deadLetterRecords(m, batch.rejected, gw))) return;
    const held = batch.rejected.flatMap((r) => (r.seq === null ? [] : [r.seq]));
    const floor = batch.floor;
    if (parts.channel === 'readings') {
      stats.received.readings += batch.readings.length;
      if (batch.readings.length === 0) return settleHeld(m, gw, held);
      readingsWriters[shardOf(gw.id)]!.push({ gateway: gw, records: batch.readings, floor, sentAt: batch.sentAt, msg: m, count: batch.readings.length, held });
    } else {
      stats.received.events += batch.events.length;
      if (batch.events.length === 0) return settleHeld(m, gw, held);
      eventsWriter.push({ gateway: gw, records: batch.events, floor, sentAt: batch.sentAt, msg: m, count: batch.events.length, held });
    }
  }

  /** A batch whose every record was dead-lettered alone: settled and receipted as it stands. */
  function settleHeld(m: InboundMessage, gw: GatewayInfo, held: number[]) {
    m.settle();
    receiptFor(gw, held);
  }

  async function handleStatusMessage(m: InboundMessage, parts: TopicParts, gw: GatewayInfo | null, where: string) {
    const parsed = parsePayload(gatewayStatusSchema, m.payload);
    if (!parsed.ok) {
      return deadLetter(m, parsed.error.startsWith('payload is not JSON') ? 'not_json' : 'schema', `status: ${parsed.error}`, parts.gatewayId, where);
    }
    if (!gw) {
      reminder.note(parts.gatewayId, parts.county);
      return m.settle();
    }
    if (parsed.value.gateway !== parts.gatewayId) {
      return deadLetter(m, 'gateway_mismatch', `payload says gateway "${parsed.value.gateway}" but the topic says "${parts.gatewayId}"`, parts.gatewayId, gw.orgPath);
    }
    if (parts.county !== gw.county) {
      return deadLetter(m, 'gateway_mismatch', `gateway ${gw.id} is registered in county ${gw.county}, not ${parts.county} of the topic`, gw.id, regionPath(parts.county));
    }
    stats.received.status++;
    await handleStatus(m, parsed.value);
  }

  async function handleStatus(m: InboundMessage, status: GatewayStatus) {
    // A last will carries the time its gateway connected; what counts is when it fired.
    const effective = status.state === 'offline' ? { ...status, ts: Math.max(status.ts, clock.now()) } : status;
    let applied: { orgPath: string; county: string } | null;
    try {
      applied = await withRetry('status', () => store.applyGatewayStatus(effective));
    } catch (e) {
      log.error('could not apply gateway status; left unacknowledged', { gateway: status.gateway, error: (e as Error).message });
      return;
    }
    m.settle();
    if (!applied) return;
    log.info('gateway status', { gateway: status.gateway, state: status.state, devices: status.devices?.length });
    for (const l of opts.listeners) {
      if (!l.onGatewayStatus) continue;
      try {
        await l.onGatewayStatus({ ...effective, orgPath: applied.orgPath });
      } catch (e) {
        stats.listenerErrors[l.name] = (stats.listenerErrors[l.name] ?? 0) + 1;
        log.child(l.name).error('listener failed on a gateway status', { error: e as Error, gateway: status.gateway });
      }
    }
  }

  function handleCommandResult(m: InboundMessage, parts: TopicParts) {
    stats.received.commandResults++;
    m.settle();
    const parsed = parsePayload(commandResultSchema, m.payload);
    if (!parsed.ok) {
      void deadLetter(m, parsed.error.startsWith('payload is not JSON') ? 'not_json' : 'schema', `cmd-result: ${parsed.error}`, parts.gatewayId, regionPath(parts.county));
      return;
    }
    const p = pendingCommands.get(parsed.value.id);
    if (!p || p.gatewayId !== parts.gatewayId) return; // another worker's command
    pendingCommands.delete(parsed.value.id);
    clock.clearTimeout(p.timer);
    p.resolve(parsed.value);
  }

  function onMessage(m: InboundMessage) {
    handle(m).catch((e) => log.error('message handling failed; left unacknowledged', { topic: m.topic, error: e as Error }));
  }

  // ---- connections ----
  const shared = (filter: string) => (protocolVersion === 5 && opts.shareGroup ? `$share/${opts.shareGroup}/${filter}` : filter);
  async function openLane(name: 'events' | 'readings' | 'control', subs: () => string[]): Promise<Lane> {
    return Lane.open({
      name,
      url: opts.brokerUrl,
      clientId: `${idBase}-${name}`,
      username: opts.username,
      password: opts.password,
      protocolVersion,
      // Sessions persist so that a dropped connection (a keepalive timeout while the worker holds
      // back, a broker restart) resumes with everything in flight redelivered. Client ids are stable
      // per region and replica, so the broker keeps the session an hour and a restarted worker gets
      // what was queued for it meanwhile.
      clean: false,
      sessionExpirySeconds: 3600,
      receiveMaximum,
      subscriptions: subs,
      onMessage,
      saturated: saturatedFor(name),
      log: log.child(name),
      reconnectPeriodMs: opts.reconnectPeriodMs,
      tls: opts.tls,
    });
  }

  async function openAll() {
    lanes.events = await openLane('events', () => [shared(regionFilter(opts.region, 'events'))]);
    lanes.readings = await openLane('readings', () => [shared(regionFilter(opts.region, 'readings'))]);
    lanes.control = await openLane('control', () => [regionFilter(opts.region, 'status'), regionFilter(opts.region, 'cmd-result')]);
  }

  // ---- rollups (native PostgreSQL / PGlite): their own fault unit, off the ingest path ----
  const rollupEveryMs = opts.rollupEveryMs ?? 5_000;
  let rollupTimer: unknown = null;
  let rollupRunning = false;
  const rollupLog = log.child('rollups');
  async function refreshRollups() {
    if (rollupRunning || stopping) return;
    rollupRunning = true;
    try {
      await store.sink.refreshRollups();
    } catch (e) {
      rollupLog.warn('rollup refresh failed; the marks stay and are retried', { error: (e as Error).message, code: (e as SinkError).code });
    } finally {
      rollupRunning = false;
    }
  }

  return {
    commands,
    async start() {
      stopping = false;
      // One worker per client id: a second one would take the first one's sessions over in turns.
      identity ??= await claimWorkerIdentity(store.db, idBase, log);
      if (rollupEveryMs > 0 && !store.timescale && rollupTimer === null) {
        rollupTimer = clock.setInterval(() => void refreshRollups(), rollupEveryMs);
      }
      try {
        await openAll();
      } catch (e) {
        const code = (e as { code?: number }).code;
        // 1 (3.1.1: unacceptable protocol version) / 132 (5: unsupported protocol version)
        if (protocolVersion === 5 && opts.protocolVersion === undefined && (code === 1 || code === 132)) {
          for (const l of Object.values(lanes)) await l?.close();
          protocolVersion = 4;
          if (opts.shareGroup) log.warn('broker speaks MQTT 3.1.1 only: no shared subscription; run one worker per region', { shareGroup: opts.shareGroup });
          await openAll();
        } else {
          for (const l of Object.values(lanes)) await l?.close();
          await identity?.release();
          identity = null;
          throw e;
        }
      }
      log.info('ingest worker started', { region: opts.region, clientId: idBase, protocolVersion, shareGroup: opts.shareGroup ?? null });
    },
    async stop() {
      // Finish what is being committed, then disconnect; what is not committed stays unacknowledged.
      await Promise.race([Promise.all([...readingsWriters.map((w) => w.drained()), eventsWriter.drained()]), sleep(10_000)]);
      stopping = true;
      if (rollupTimer !== null) clock.clearInterval(rollupTimer);
      rollupTimer = null;
      for (const l of Object.values(lanes)) await l?.close();
      await identity?.release();
      identity = null;
      for (const [id, p] of pendingCommands) {
        clock.clearTimeout(p.timer);
        p.reject(new Error(`ingest worker stopped before gateway ${p.gatewayId} answered command ${id}`));
      }
      pendingCommands.clear();
    },
    stats(): IngestStats {
      const lane = (l?: Lane) => ({ state: l?.state ?? ('closed' as LaneState), connects: l?.connects ?? 0, held: l?.heldCount() ?? 0, lastError: l?.lastError ?? null });
      return {
        lanes: { events: lane(lanes.events), readings: lane(lanes.readings), control: lane(lanes.control) },
        protocolVersion,
        received: { ...stats.received },
        stored: { ...stats.stored },
        duplicates: { ...stats.duplicates },
        deadLetters: { total: stats.deadLetters.total, byReason: { ...stats.deadLetters.byReason } },
        awaitingRegistration: stats.awaitingRegistration,
        receipts: { ...stats.receipts },
        commits: { ...stats.commits },
        lastCommit: stats.lastCommit,
        pendingRecords,
        storageRetries: stats.storageRetries,
        storage: stats.storage,
        listenerErrors: { ...stats.listenerErrors },
        lagMs: stats.lagMs,
      };
    },
  };
}
