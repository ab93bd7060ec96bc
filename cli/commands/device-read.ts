// Technician commands: `xiaoan device profiles`, `xiaoan device read`, `xiaoan device discover`.
// Output is JSON lines on stdout; a failure is one line on stderr (what failed, where) and a
// non-zero exit, never a stack trace.
import { createLogger, silentLogger, systemClock } from '../../contract/index.ts';
import { UserError, parseArgs, type Command } from '../command.ts';
import { createDriver, DriverError, getProfile, loadProfiles, LineRegistry, parseModbusUrl, type DeviceDriver, type Observation, type OnvifDriver } from '../../device-drivers/index.ts';

function logger(flags: Record<string, string | true>) {
  return flags.verbose ? createLogger({ level: 'debug' }) : silentLogger;
}

function driverProblem(e: unknown): UserError {
  if (e instanceof DriverError) return new UserError(e.message);
  return new UserError((e as Error)?.message ?? String(e));
}

export const deviceProfiles: Command = {
  name: 'device profiles',
  summary: { zh: '列出设备型号（JSON 行）', en: 'list device profiles as JSON lines' },
  usage: 'device profiles [--protocol modbus|mqtt|onvif]',
  async run(args, io) {
    const { flags } = parseArgs(args);
    let profiles;
    try {
      profiles = await loadProfiles();
    } catch (e) {
      throw new UserError((e as Error).message.split('\n').join(' '));
    }
    for (const p of profiles) {
      if (typeof flags.protocol === 'string' && p.protocol !== flags.protocol) continue;
      io.out(JSON.stringify({ id: p.id, protocol: p.protocol, category: p.category, description: p.description }));
    }
    return 0;
  },
};

function line(spec: string, o: Observation): string {
  return JSON.stringify(o.kind === 'reading' ? { device: spec, ...o } : { device: spec, ...o });
}

export const deviceRead: Command = {
  name: 'device read',
  summary: { zh: '读取一台设备并打印标准化读数与事件', en: 'read a device once and print normalised readings and events' },
  usage:
    'device read --profile ID --url URL [--count N] [--interval MS] [--seconds S] [--verbose]\n' +
    '  URL: modbus-tcp://HOST:PORT?unit=N | modbus-rtu:///dev/ttyX?baud=9600&unit=N | onvif://USER:PASS@HOST:PORT\n' +
    '  --count N     poll N times (Modbus; default 1)      --seconds S  listen S seconds for camera events (ONVIF; default 0)',
  async run(args, io) {
    const { flags } = parseArgs(args, ['verbose']);
    if (typeof flags.profile !== 'string') throw new UserError('缺少 --profile missing --profile ID (see `xiaoan device profiles`)');
    if (typeof flags.url !== 'string') throw new UserError('缺少 --url missing --url URL, e.g. modbus-tcp://192.168.1.20:502?unit=1');
    const count = flags.count === undefined ? 1 : Number(flags.count);
    const interval = flags.interval === undefined ? 1000 : Number(flags.interval);
    const seconds = flags.seconds === undefined ? 0 : Number(flags.seconds);
    if (!Number.isInteger(count) || count < 1) throw new UserError('--count takes a whole number ≥ 1');
    if (!Number.isFinite(interval) || interval < 0) throw new UserError('--interval takes milliseconds ≥ 0');
    if (!Number.isFinite(seconds) || seconds < 0) throw new UserError('--seconds takes a number ≥ 0');
    const log = logger(flags);
    let driver: DeviceDriver;
    try {
      const profile = await getProfile(flags.profile);
      if (profile.protocol === 'mqtt')
        throw new UserError(`${profile.id} 是 MQTT 设备 is an MQTT device: it publishes to a gateway's device broker; enrol it on a gateway instead of reading it here`);
      driver = await createDriver({ id: 'cli', profile: profile.id, url: flags.url }, { clock: systemClock, log }, { modbus: { lines: new LineRegistry() } });
    } catch (e) {
      throw e instanceof UserError ? e : driverProblem(e);
    }
    const device = flags.url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
    let failed: string | null = null;
    try {
      const camera = driver as Partial<OnvifDriver>;
      if (typeof camera.describe === 'function') {
        // a camera: say what it is, then listen for its events if asked
        const info = await camera.describe();
        io.out(JSON.stringify({ device, kind: 'camera', ...info }));
      }
      if (driver.subscribe && seconds > 0) await driver.subscribe((o) => io.out(line(device, o)));
      for (let i = 0; i < count; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, interval));
        const obs = driver.poll && typeof camera.describe !== 'function' ? await driver.poll() : [];
        for (const o of obs) io.out(line(device, o));
        const h = driver.health();
        if (h.state !== 'online') failed = h.lastError ?? `device is ${h.state}`;
        else failed = null;
      }
      if (seconds > 0) await new Promise((r) => setTimeout(r, seconds * 1000));
    } catch (e) {
      failed = (e as Error)?.message ?? String(e);
    } finally {
      await driver.close().catch(() => {});
    }
    if (failed) throw new UserError(failed);
    return 0;
  },
};

function parseUnits(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new UserError(`--units "${s}": write e.g. 1-10 or 1,2,5`);
    const a = Number(m[1]);
    const b = m[2] ? Number(m[2]) : a;
    if (a < 1 || b > 247 || b < a) throw new UserError(`--units "${s}": units are 1–247`);
    for (let u = a; u <= b; u++) out.push(u);
  }
  return out;
}

export const deviceDiscover: Command = {
  name: 'device discover',
  summary: { zh: '发现 ONVIF 摄像机（WS-Discovery）或某端口上的 Modbus 从站', en: 'find ONVIF cameras (WS-Discovery) or the Modbus units on a port' },
  usage:
    'device discover [--onvif [--address 127.0.0.1] [--timeout MS]] [--modbus URL --units 1-10 [--timeout MS]]\n' +
    '  --onvif: probe by WS-Discovery (multicast unless --address gives a host to probe by unicast)\n' +
    '  --modbus modbus-tcp://HOST:PORT or modbus-rtu:///dev/ttyX?baud=9600: ask each unit for one register',
  async run(args, io) {
    const { flags } = parseArgs(args, ['onvif', 'verbose']);
    const timeout = flags.timeout === undefined ? undefined : Number(flags.timeout);
    if (timeout !== undefined && (!Number.isFinite(timeout) || timeout <= 0)) throw new UserError('--timeout takes milliseconds > 0');
    if (typeof flags.modbus === 'string') {
      const units = parseUnits(typeof flags.units === 'string' ? flags.units : '1-10');
      const { discoverModbusUnits } = await import('../../device-drivers/index.ts');
      let found;
      try {
        parseModbusUrl(flags.modbus);
        found = await discoverModbusUnits(flags.modbus, units, { timeoutMs: timeout ?? 300, log: logger(flags) });
      } catch (e) {
        throw driverProblem(e);
      }
      for (const f of found) io.out(JSON.stringify(f));
      if (!found.length) io.err(`未发现从站 no Modbus unit answered on ${flags.modbus} (units ${units[0]}–${units[units.length - 1]})`);
      return found.length ? 0 : 1;
    }
    if (flags.onvif || !flags.modbus) {
      const { discoverOnvif } = await import('../../device-drivers/index.ts');
      let found;
      try {
        found = await discoverOnvif({ timeoutMs: timeout ?? 3000, address: typeof flags.address === 'string' ? flags.address : undefined, port: typeof flags.port === 'string' ? Number(flags.port) : undefined });
      } catch (e) {
        throw driverProblem(e);
      }
      for (const f of found) io.out(JSON.stringify(f));
      if (!found.length) io.err('未发现摄像机 no ONVIF camera answered the probe');
      return found.length ? 0 : 1;
    }
    return 0;
  },
};

export const deviceCommands: Command[] = [deviceProfiles, deviceRead, deviceDiscover];
