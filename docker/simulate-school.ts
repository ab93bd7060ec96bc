// Simulated devices of the demo school for `docker-compose -f school.yaml --profile simulators up`:
// a Modbus TCP smoke detector and a temperature/humidity sensor (enrol them on the gateway as
// modbus-tcp://simulators:5020?unit=1 and modbus-tcp://simulators:5021?unit=1), and, when their
// passwords are given, an MQTT gate and a visitor kiosk on the gateway's device broker.
//
//   XIAOAN_SIM_BROKER_URL              the gateway's device broker (mqtt://gateway:1884)
//   XIAOAN_SIM_GATE_PASSWORD_FILE      password file of device gate-1 (enrolled with that password)
//   XIAOAN_SIM_KIOSK_PASSWORD_FILE     password file of device kiosk-1
//   XIAOAN_SIM_MODBUS_HOST             bind address of the Modbus simulators (0.0.0.0)
//
// Values drift slowly so that report-by-exception has something to report; SIGTERM stops all.
import { readFileSync } from 'node:fs';
import {
  getProfile,
  startGateSimulator,
  startKioskSimulator,
  startModbusSimulator,
  type ModbusProfile,
} from '../device-drivers/index.ts';
import { createLogger } from '../contract/index.ts';

const log = createLogger({ unit: 'simulate-school' });
const env = process.env;
const host = env.XIAOAN_SIM_MODBUS_HOST || '0.0.0.0';
const closers: Array<() => Promise<void>> = [];

function secret(name: string): string | undefined {
  const file = env[`${name}_FILE`];
  if (!file) return env[name] || undefined;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (e) {
    log.warn('secret file unreadable; that simulator stays off', { variable: `${name}_FILE`, code: (e as NodeJS.ErrnoException).code });
    return undefined;
  }
}

async function modbus(profileId: string, port: number, drift: (t: number) => Record<string, number>) {
  const profile = (await getProfile(profileId)) as ModbusProfile | undefined;
  if (!profile) throw new Error(`profile ${profileId} is missing from device-drivers/profiles`);
  const sim = await startModbusSimulator({ profile, host, port });
  const timer = setInterval(() => {
    for (const [point, value] of Object.entries(drift(Date.now() / 1000))) {
      try {
        sim.set(point, value);
      } catch (e) {
        log.child(profileId).warn('cannot set simulated point', { point, error: (e as Error).message });
      }
    }
  }, 1000);
  closers.push(async () => {
    clearInterval(timer);
    await sim.close();
  });
  log.info('Modbus simulator listening', { profile: profileId, url: `modbus-tcp://${host}:${sim.port}?unit=${sim.unitId}` });
}

await modbus('smoke-photoelectric-generic', 5020, (t) => ({ smoke_density: Math.max(0, 0.02 + 0.01 * Math.sin(t / 60)) }));
await modbus('temp-humidity-generic', 5021, (t) => ({ temperature: 22 + 3 * Math.sin(t / 600), humidity: 45 + 10 * Math.sin(t / 900) }));

const brokerUrl = env.XIAOAN_SIM_BROKER_URL || 'mqtt://gateway:1884';
const gatePassword = secret('XIAOAN_SIM_GATE_PASSWORD');
if (gatePassword) {
  const gate = await startGateSimulator({ brokerUrl, deviceId: 'gate-1', username: 'gate-1', password: gatePassword });
  closers.push(() => gate.close());
  log.info('gate simulator connected', { brokerUrl, device: 'gate-1' });
}
const kioskPassword = secret('XIAOAN_SIM_KIOSK_PASSWORD');
if (kioskPassword) {
  const kiosk = await startKioskSimulator({ brokerUrl, deviceId: 'kiosk-1', username: 'kiosk-1', password: kioskPassword });
  closers.push(() => kiosk.close());
  log.info('kiosk simulator connected', { brokerUrl, device: 'kiosk-1' });
}

const stop = async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => {});
  process.exit(0);
};
process.once('SIGTERM', () => void stop());
process.once('SIGINT', () => void stop());
