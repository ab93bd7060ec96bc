// ingest/ — the central tier: broker for the demo, ingest workers, the store (PostgreSQL /
// TimescaleDB / PGlite, optional InfluxDB), scoped queries.
export type { StoredBatch, ArrivedBatch, BatchListener, CommandSender, DeadLetterReason, GatewayInfo } from './types.ts';
export { DEAD_LETTER_REASONS, LEGACY_DEAD_LETTER_REASONS } from './types.ts';
export { openStore, DEMO_ORG_NODES, StoreInputError } from './store.ts';
export type { Store, OpenStoreOptions, OrgNodeInput, RegisterGatewayInput, DeadLetterInput } from './store.ts';
export type {
  Queries, DeviceRow, DeviceFilter, ReadingsQuery, ReadingsResult, ReadingPoint, Resolution, LatestRow,
  RegionCount, CategoryCount, GatewayRow, DeadLetterRow, DeadLetterFilter, EventRow,
} from './queries.ts';
export { resolutionFor, RAW_MAX_SPAN, MINUTE_ROLLUP_MAX_SPAN } from './queries.ts';
export { startCentralBroker } from './broker.ts';
export type { CentralBroker, CentralBrokerOptions, ServiceAccount } from './broker.ts';
export { createIngestWorker, CommandTimeoutError, defaultClientId } from './worker.ts';
export type { IngestWorker, IngestWorkerOptions, IngestStats } from './worker.ts';
export { classifyDbError } from './postgres/writer.ts';
export { createInfluxSink, classifyInfluxError, parseInfluxUrl, InfluxWriteError } from './influx/sink.ts';
export type { InfluxSink, InfluxSinkOptions, InfluxSinkStats, InfluxHealth } from './influx/sink.ts';
export { hashSecret } from './secrets.ts';
export { scopeOf, scopeSql, type Scope } from './scope.ts';
export { openDb, migrate, type Db, type Queryable } from './db.ts';
export { replayDeadLetter, type ReplayResult, type ReplayOutcome } from './replay.ts';
export { parseUplinkBatch, type ParsedUplink, type RejectedRecord } from './uplink.ts';
export { claimWorkerIdentity, WorkerIdentityTakenError, type IdentityClaim } from './identity-lock.ts';
export { openStoreWhenReady, storeMayComeUp, type WaitOptions } from './store-wait.ts';
