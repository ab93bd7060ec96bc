// The ingest worker: consumes one region's uplink from the broker, validates it against the
// contract, dead-letters what is wrong (with the reason and a counter), hands each valid batch to
// the rules at once (on arrival) and to the bulk writer of its lane, stores every record exactly
// once on (gateway, seq), and acknowledges and receipts each message only once its records are
// stored AND its rule evaluation has committed (ingest/README.md "Rules on arrival").
//
// This file only composes the units in ingest/worker/: connections (three lanes), inbound router,
// arrival evaluation, batch writers (readings sharded by gateway, events), custody gate and receipt
// publisher, stored dispatch (listeners after the commit), gateway directory, storage retry, dead
// letters, status applier, gateway commands and the rollup timer.
//
// Custody (docs/delivery.md): a gateway not registered centrally gets no receipt and no dead
// letter: its records stay on the gateway until `xiaoan gateway add` registers it.

import { parseRegionCode, silentLogger, systemClock, ID_PATTERN, type Clock, type DeviceEvent, type Logger, type Reading } from '../contract/index.ts';
import { claimWorkerIdentity, type IdentityClaim } from './identity-lock.ts';
import type { LaneState } from './mqtt-lane.ts';
import type { Store } from './store.ts';
import type { BatchListener, CommandSender } from './types.ts';
import { ArrivalEvaluation } from './worker/arrival.ts';
import { BatchWriter, type Lane as WriterLane, type WriterStats } from './worker/batch-writer.ts';
import { GatewayCommands } from './worker/commands.ts';
import { Connections } from './worker/connections.ts';
import { CustodyGate, type PendingMessage } from './worker/custody.ts';
import { DeadLetterKeeper } from './worker/dead-letters.ts';
import { GatewayDirectory } from './worker/gateway-directory.ts';
import { InboundRouter, type InboundCounts } from './worker/inbound.ts';
import { ReceiptPublisher } from './worker/receipts.ts';
import { RegistrationReminder } from './worker/registration-reminder.ts';
import { RollupTimer } from './worker/rollup-timer.ts';
import { StatusApplier } from './worker/status.ts';
import { StorageRetry } from './worker/storage-retry.ts';
import { StoredDispatch } from './worker/stored-dispatch.ts';

export { buildReceipts } from './worker/receipts.ts';
export { CommandTimeoutError } from './worker/commands.ts';
export { RegistrationReminder } from './worker/registration-reminder.ts';

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


/** The default client id prefix: stable per region and replica (docs/configuration.md). */
export function defaultClientId(region: string, replica = 'main'): string {
  return `xiaoan-ingest-${region}-${replica}`;
}

/** Every unit of one worker, wired; `createIngestWorker` starts and stops them. */
interface Parts {
  idBase: string;
  connections: Connections;
  router: InboundRouter;
  writers: { readings: BatchWriter[]; events: BatchWriter };
  custody: CustodyGate;
  receipts: ReceiptPublisher;
  retry: StorageRetry;
  deadLetters: DeadLetterKeeper;
  commands: GatewayCommands;
  rollups: RollupTimer;
  counts: InboundCounts;
  writerStats: WriterStats;
  listenerErrors: Record<string, number>;
}

function configured(opts: IngestWorkerOptions) {
  parseRegionCode(opts.region);
  const replica = opts.replica ?? 'main';
  if (!ID_PATTERN.test(replica)) throw new Error(`replica "${replica}" must be 1–64 letters, digits, '.', '_' or '-' (副本名格式错误)`);
  return {
    idBase: opts.clientId ?? defaultClientId(opts.region, replica),
    maxRecords: opts.batch?.maxRecords ?? 20_000,
    highWater: opts.batch?.highWaterRecords ?? 60_000,
    receiveMaximum: opts.batch?.receiveMaximum ?? 1000,
    retry: { minMs: opts.retry?.minMs ?? 200, maxMs: opts.retry?.maxMs ?? 5_000 },
    shards: Math.max(1, Math.floor(opts.batch?.concurrency ?? (opts.store.engine === 'postgres' ? 2 : 1))),
    rollupEveryMs: opts.rollupEveryMs ?? 5_000,
  };
}

/** Gateways are split between the reading writers by a hash of their id: one gateway's records commit in order. */
export function shardOf(gatewayId: string, shards: number): number {
  let h = 0;
  for (let i = 0; i < gatewayId.length; i++) h = (h * 31 + gatewayId.charCodeAt(i)) | 0;
  return Math.abs(h) % shards;
}

function wire(opts: IngestWorkerOptions, log: Logger, clock: Clock, stopping: () => boolean): Parts {
  const cfg = configured(opts);
  const store = opts.store;
  const listenerErrors: Record<string, number> = {};
  const counts: InboundCounts = { received: { readings: 0, events: 0, status: 0, commandResults: 0 }, awaitingRegistration: 0 };
  const writerStats: WriterStats = { stored: { readings: 0, events: 0 }, duplicates: { readings: 0, events: 0 }, commits: { readings: 0, events: 0 }, pending: { readings: 0, events: 0 }, lastCommit: null, lagMs: null };
  const retry = new StorageRetry(clock, cfg.retry, log, stopping);
  const gateways = new GatewayDirectory(store, clock, opts.gatewayCacheMs?.known, opts.gatewayCacheMs?.unknown);
  const deadLetters = new DeadLetterKeeper((d) => store.recordDeadLetter(d), retry, log);
  const connections: Connections = new Connections({
    ...opts, idBase: cfg.idBase, receiveMaximum: cfg.receiveMaximum, log,
    onMessage: (m) => router.handle(m).catch((e) => log.error('message handling failed; left unacknowledged', { topic: m.topic, error: e as Error })),
    saturated: (lane) => lane !== 'control' && writerStats.pending[lane] >= cfg.highWater,
  });
  const receipts = new ReceiptPublisher(clock, () => connections.control, log);
  const custody = new CustodyGate(receipts, stopping, log);
  const dispatch = new StoredDispatch(opts.listeners, listenerErrors, log);
  const writer = (lane: WriterLane) => new BatchWriter({
    lane, clock, log, maxRecords: cfg.maxRecords, retry, deadLetters, custody, stats: writerStats, stopping,
    // floor: the gateway's lowest unreceipted seq, for the writer's dedup (docs/delivery.md)
    write: (items: readonly PendingMessage<Reading | DeviceEvent>[]) => lane === 'readings'
      ? store.sink.writeReadings(items.map((p) => ({ gatewayId: p.gateway.id, readings: p.records as Reading[], floor: p.floor })))
      : store.sink.writeEvents(items.map((p) => ({ gatewayId: p.gateway.id, events: p.records as DeviceEvent[], floor: p.floor }))),
    onFresh: (l, b) => dispatch.enqueue(l, b),
    caughtUp: () => dispatch.caughtUp(),
    resume: () => connections.resume(),
  });
  const writers = { readings: Array.from({ length: cfg.shards }, () => writer('readings')), events: writer('events') };
  const commands = new GatewayCommands(clock, (id) => gateways.get(id), () => connections.control, log);
  const reminder = new RegistrationReminder(clock, 60_000, (gatewayId, county) =>
    log.warn('gateway not registered centrally; its records stay on the gateway until it is (网关未在中心登记，数据暂留网关)',
      { gateway: gatewayId, county, todo: `xiaoan gateway add ${gatewayId} --county ${county} --org ORG_PATH --name NAME` }));
  const router = new InboundRouter({
    gateways, retry, deadLetters, reminder, commands, receipts, counts, log,
    status: new StatusApplier((s) => store.applyGatewayStatus(s), opts.listeners, retry, clock, listenerErrors, log),
    arrival: new ArrivalEvaluation(opts.listeners, listenerErrors, log),
    writerFor: (lane, gatewayId) => (lane === 'events' ? writers.events : writers.readings[shardOf(gatewayId, cfg.shards)]!),
  });
  const rollups = new RollupTimer(clock, store.timescale ? 0 : cfg.rollupEveryMs, async () => void (await store.sink.refreshRollups()), log.child('rollups'));
  return { idBase: cfg.idBase, connections, router, writers, custody, receipts, retry, deadLetters, commands, rollups, counts, writerStats, listenerErrors };
}

function statsOf(p: Parts): IngestStats {
  const w = p.writerStats;
  return {
    lanes: p.connections.report(),
    protocolVersion: p.connections.protocolVersion,
    received: { ...p.counts.received },
    stored: { ...w.stored },
    duplicates: { ...w.duplicates },
    deadLetters: { total: p.deadLetters.total, byReason: { ...p.deadLetters.byReason } },
    awaitingRegistration: p.counts.awaitingRegistration,
    receipts: { published: p.receipts.published, failed: p.receipts.failed },
    commits: { ...w.commits },
    lastCommit: w.lastCommit,
    pendingRecords: w.pending.readings + w.pending.events,
    storageRetries: p.retry.retries,
    storage: p.retry.state,
    listenerErrors: { ...p.listenerErrors },
    lagMs: w.lagMs,
  };
}

export async function createIngestWorker(opts: IngestWorkerOptions): Promise<IngestWorker> {
  const log = (opts.log ?? silentLogger).child('ingest');
  const clock = opts.clock ?? systemClock;
  let stopping = false;
  const p = wire(opts, log, clock, () => stopping);
  let identity: IdentityClaim | null = null;
  const allDrained = () => Promise.all([...p.writers.readings.map((w) => w.drained()), p.writers.events.drained()]).then(() => p.custody.idle());
  return {
    commands: p.commands,
    async start() {
      stopping = false;
      // One worker per client id: a second one would take the first one's sessions over in turns.
      identity ??= await claimWorkerIdentity(opts.store.db, p.idBase, log);
      p.rollups.start();
      try {
        await p.connections.open();
      } catch (e) {
        p.rollups.stop();
        await p.connections.close();
        await identity?.release();
        identity = null;
        throw e;
      }
      log.info('ingest worker started', { region: opts.region, clientId: p.idBase, protocolVersion: p.connections.protocolVersion, shareGroup: opts.shareGroup ?? null });
    },
    async stop() {
      // Finish what is being committed (and receipt it), then disconnect; the rest stays unacknowledged.
      await Promise.race([allDrained(), p.retry.sleep(10_000)]);
      stopping = true;
      p.rollups.stop();
      await p.connections.close();
      await identity?.release();
      identity = null;
      p.commands.cancelAll();
    },
    stats: () => statsOf(p),
  };
}
