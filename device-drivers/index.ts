// device-drivers/ — protocol drivers (Modbus TCP/RTU, MQTT devices, ONVIF cameras), the profile
// catalogue (device models as data) and the simulators the demo and tests run against.
import type { DeviceDriver, DeviceSpec, DriverContext } from './types.ts';
import { DriverError } from './types.ts';
import { getProfile } from './profiles.ts';
import type { Profile } from './profile-schema.ts';
import { createModbusDriver, type ModbusDriverOptions } from './modbus/driver.ts';
import { createMqttDriver } from './mqtt/driver.ts';
import { createOnvifDriver } from './onvif/driver.ts';

export * from './types.ts';
export { loadProfiles, getProfile, parseProfile, ProfileCatalogueError, BUILTIN_PROFILE_DIR } from './profiles.ts';
export { profileSchema, profileCapabilities, parseDuration, ALARM_EVENT_TYPES, type Profile, type ModbusProfile, type MqttProfile, type OnvifProfile } from './profile-schema.ts';
export { HealthTracker, OFFLINE_AFTER_FAILURES } from './health.ts';
export { createModbusDriver, type ModbusDriver } from './modbus/driver.ts';
export { startModbusSimulator, type ModbusSimulator, type ModbusSimulatorOptions, type ModbusFault } from './modbus/simulator.ts';
export { LineRegistry, ModbusLine, interFrameGapMs } from './modbus/line.ts';
export { parseModbusUrl } from './modbus/url.ts';
export { modiconRef } from './modbus/codec.ts';
export { startDeviceBroker, type DeviceBroker, type DeviceBrokerOptions } from './mqtt/broker.ts';
export { createMqttDriver } from './mqtt/driver.ts';
export { startGateSimulator, startKioskSimulator, startButtonSimulator, type GateSimulator, type KioskSimulator, type ButtonSimulator, type Visitor } from './mqtt/simulators.ts';
export { freePort } from './util/net.ts';
export { discoverModbusUnits, type DiscoveredUnit } from './modbus/discover.ts';
export { discoverOnvif, type DiscoveredCamera } from './onvif/discovery.ts';
export { createOnvifDriver, parseOnvifUrl, type OnvifDriver, type CameraInfo } from './onvif/driver.ts';
export { startOnvifSimulator, type OnvifSimulator, type OnvifSimulatorOptions, type HostileMode } from './onvif/simulator.ts';
export { startTestPatternFeed, type VideoFeed } from './onvif/video-feed.ts';

export interface CreateDriverOptions {
  /** use this profile instead of looking `spec.profile` up in the catalogue */
  profile?: Profile;
  modbus?: ModbusDriverOptions;
}

/**
 * A driver for one enrolled device, chosen by its profile's protocol. Throws a DriverError for a
 * bad spec (unknown profile, URL not matching the protocol); device faults later never throw from
 * poll() — they show in health().
 */
export async function createDriver(spec: DeviceSpec, ctx: DriverContext, opts: CreateDriverOptions = {}): Promise<DeviceDriver> {
  const profile = opts.profile ?? (await getProfile(spec.profile));
  const scheme = spec.url.split(':')[0];
  const mismatch = (want: string) =>
    new DriverError(`设备地址与型号协议不符 device ${spec.id}: URL scheme "${scheme}:" does not fit profile ${profile.id} (${profile.protocol}); use ${want}`, 'bad_url', false);
  switch (profile.protocol) {
    case 'modbus':
      if (scheme !== 'modbus-tcp' && scheme !== 'modbus-rtu') throw mismatch('modbus-tcp://HOST:PORT?unit=N or modbus-rtu:///dev/ttyX?baud=9600&unit=N');
      return createModbusDriver(spec, profile, ctx, opts.modbus);
    case 'mqtt':
      if (scheme !== 'mqtt') throw mismatch('mqtt://DEVICE-ID');
      return createMqttDriver(spec, profile, ctx);
    case 'onvif':
      if (scheme !== 'onvif') throw mismatch('onvif://USER:PASS@HOST:PORT');
      return createOnvifDriver(spec, profile, ctx);
  }
}
