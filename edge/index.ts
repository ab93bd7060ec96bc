// edge/ — the school's gateway: device registry, scheduler, local device broker, durable
// store-and-forward buffer, MQTT uplink, downlink commands, local REST + /metrics + /healthz.
export { edgeConfigSchema, deviceSpecSchema, parseEdgeConfig, loadEdgeConfigFile, resolvePaths, configProblems, ConfigError } from './config.ts';
export type { EdgeConfig, EdgeConfigInput, DeviceEnrolment } from './config.ts';
export { createGateway, EDGE_VERSION } from './gateway.ts';
export type { Gateway, GatewayDeps, GatewayRuntimeStatus, DeviceTestResult, DeviceView } from './gateway.ts';
export { openSqliteBuffer } from './buffer.ts';
export type { RecordBuffer, NewRecord, BufferStats, OutgoingBatch, QuarantineEntry } from './buffer.ts';
export { openRegistry, validateEnrolment, validateDeviceCsv, parseCsv, formatProblem, EnrolmentError } from './registry.ts';
export type { Registry, EnrolledDevice, Problem, CommandAuditEntry } from './registry.ts';
export { DeadbandFilter, DeviceRunner } from './scheduler.ts';
export { loadDefaultDriverKit } from './drivers.ts';
export type { DriverKit, ProfileInfo, DeviceBroker } from './drivers.ts';
// Helpers for tests and benchmarks (a manual clock, a real Mosquitto on a free port, scripted drivers).
export { createManualClock, freePort, startMosquitto, scriptedKit, scriptedProfile } from './testing.ts';
export type { ManualClock, MosquittoHandle, ScriptedDevice } from './testing.ts';
