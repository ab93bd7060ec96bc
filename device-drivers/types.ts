// The seam between device drivers and the edge gateway. The edge knows these types only; a
// driver knows its protocol and reads a device's model from its profile (data, never code).

import type { Clock, HealthState, Logger } from '../contract/index.ts';

/** One enrolled device as the gateway's registry keeps it. */
export interface DeviceSpec {
  /** unique on the gateway; used in topics and readings */
  id: string;
  /** profile id from the catalogue, e.g. `smoke-photoelectric-generic` */
  profile: string;
  /**
   * Where it is: `modbus-tcp://HOST:PORT?unit=N`, `modbus-rtu:///dev/ttyX?baud=9600&unit=N`,
   * `onvif://USER:PASS@HOST:PORT`, `mqtt://DEVICE-ID` (publishes to the gateway's own broker).
   */
  url: string;
  name?: string;
  building?: string;
  room?: string;
  /** overrides the profile's poll interval */
  intervalMs?: number;
}

/** What a driver observed, normalised: a metric value or a discrete event. */
export type Observation =
  | { kind: 'reading'; metric: string; value: number; ts: number; quality: 'good' | 'uncertain' | 'bad' }
  | { kind: 'event'; type: string; ts: number; priority: 'alarm' | 'normal'; data: Record<string, unknown> };

export interface DeviceHealth {
  state: HealthState;
  lastSeen: number | null;
  consecutiveFailures: number;
  timeouts: number;
  errors: number;
  crcErrors: number;
  lastError: string | null;
}

export interface DeviceDriver {
  readonly spec: DeviceSpec;
  health(): DeviceHealth;
  /** Polled protocols (Modbus, ONVIF snapshots/state): read every point once. Never throws for a device fault: returns [] and records it in health(). */
  poll?(): Promise<Observation[]>;
  /** Push protocols (ONVIF events, MQTT devices): deliver observations as they come. */
  subscribe?(onObservation: (o: Observation) => void): Promise<void>;
  /** Write a point the profile declares writable (e.g. a gate's `unlock`); throws a DriverError. */
  write(point: string, value: number | boolean | string): Promise<void>;
  close(): Promise<void>;
}

export interface DriverContext {
  clock: Clock;
  log: Logger;
  /** the gateway's own device broker, for `mqtt://` devices */
  deviceBroker?: DeviceBrokerHandle;
  /** key of the keyed hash of resident ID numbers (visitor kiosks); default env XIAOAN_ID_HASH_KEY */
  idHashKey?: string;
}

/** What an MQTT device driver needs of the gateway's local broker (aedes). */
export interface DeviceBrokerHandle {
  /** messages a device published under its own topic `devices/{deviceId}/…` */
  onDeviceMessage(deviceId: string, fn: (topic: string, payload: Buffer) => void): () => void;
  /** publish to a device (commands), e.g. `devices/{deviceId}/cmd` */
  publishToDevice(deviceId: string, subtopic: string, payload: Buffer | string): Promise<void>;
}

/** Errors carry the protocol's own code and whether a retry can help. */
export class DriverError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly retryable: boolean,
    /** Modbus exception code (1–11), HTTP status, … when the protocol gave one */
    readonly protocolCode?: number,
  ) {
    super(message);
    this.name = 'DriverError';
  }
}
