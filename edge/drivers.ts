// What the gateway needs of the device-drivers module, behind one small interface so tests can
// inject a kit of their own. The default kit is device-drivers/index.ts, loaded on first use.
import type { DeviceBrokerHandle, DeviceDriver, DeviceSpec, DriverContext } from '../device-drivers/types.ts';
import type { Logger } from '../contract/index.ts';

/** The part of a device profile the gateway uses: protocol and reporting policy. */
export interface ProfileInfo {
  id: string;
  protocol: string;
  description?: { zh: string; en: string };
  poll: {
    /** ms */
    interval: number;
    /** metric → smallest change forwarded */
    deadband: Record<string, number>;
    /** ms: every metric is sent at least this often */
    integrity: number;
  };
}

export interface DeviceBroker {
  readonly port: number;
  handle: DeviceBrokerHandle;
  /** accept device connections (when started with listen: false) */
  listen?(): Promise<void>;
  close(): Promise<void>;
}

export interface DriverKit {
  loadProfiles(): Promise<ProfileInfo[]>;
  createDriver(spec: DeviceSpec, ctx: DriverContext): Promise<DeviceDriver>;
  startDeviceBroker?(opts: {
    port: number;
    host: string;
    authenticate(username: string, password: string): string | null | Promise<string | null>;
    log: Logger;
    /** false: listen only when listen() is called (after the drivers registered) */
    listen?: boolean;
    /** the gateway's buffer write-error counter: a device message during which it moves is not acknowledged */
    custodyFailures?(): number;
    /** a driver could not read a device's message: quarantine it; true once durable */
    onUnreadable?(deviceId: string, topic: string, reason: string, bytes: number): boolean;
    /** the registry's device ids: a device's client id may not be another device's (contract/mqtt-identity.ts) */
    knownDevices?(): Iterable<string>;
  }): Promise<DeviceBroker>;
  /** WS-Discovery probe for ONVIF cameras (device-drivers' discoverOnvif) */
  discoverOnvif?(opts: { address?: string; port?: number; timeoutMs?: number }): Promise<Array<Record<string, unknown> & { url: string }>>;
  /** which Modbus units answer on a port (device-drivers' discoverModbusUnits) */
  discoverModbusUnits?(url: string, units: number[], opts: { timeoutMs?: number; log?: Logger }): Promise<Array<{ url: string; unit: number; answer: string }>>;
}

let defaultKit: Promise<DriverKit> | undefined;

/** device-drivers/index.ts as a DriverKit (imported lazily, so the edge loads without it in unit tests). */
export function loadDefaultDriverKit(): Promise<DriverKit> {
  defaultKit ??= (async () => {
    const path = '../device-drivers/index.ts';
    const mod = (await import(path)) as Record<string, unknown>;
    const need = ['loadProfiles', 'createDriver'];
    const missing = need.filter((n) => typeof mod[n] !== 'function');
    if (missing.length) throw new Error(`device-drivers/index.ts does not export ${missing.join(', ')}`);
    return {
      loadProfiles: mod.loadProfiles as DriverKit['loadProfiles'],
      createDriver: mod.createDriver as DriverKit['createDriver'],
      startDeviceBroker: typeof mod.startDeviceBroker === 'function' ? (mod.startDeviceBroker as DriverKit['startDeviceBroker']) : undefined,
      discoverOnvif: typeof mod.discoverOnvif === 'function' ? (mod.discoverOnvif as DriverKit['discoverOnvif']) : undefined,
      discoverModbusUnits: typeof mod.discoverModbusUnits === 'function' ? (mod.discoverModbusUnits as DriverKit['discoverModbusUnits']) : undefined,
    };
  })();
  defaultKit.catch(() => (defaultKit = undefined));
  return defaultKit;
}

/** URL schemes each protocol accepts (DeviceSpec.url). */
export const URL_SCHEMES: Record<string, string[]> = {
  modbus: ['modbus-tcp:', 'modbus-rtu:'],
  onvif: ['onvif:'],
  mqtt: ['mqtt:'],
};
