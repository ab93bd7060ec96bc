// The edge gateway: registry → per-device runners → durable buffer → uplink, plus the device
// broker for MQTT devices, downlink commands and the local HTTP API.
import { join } from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import {
  buildTopic,
  systemClock,
  createLogger,
  type Clock,
  type GatewayStatus,
  type HealthState,
  type Logger,
} from '../contract/index.ts';
import type { DeviceDriver, DeviceHealth, DeviceSpec, Observation } from '../device-drivers/types.ts';
import { openSqliteBuffer, type BufferStats, type NewRecord, type QuarantineEntry, type RecordBuffer } from './buffer.ts';
import { createCommandHandler, type DiscoverQuery } from './commands.ts';
import type { EdgeConfig } from './config.ts';
import { loadDefaultDriverKit, type DeviceBroker, type DriverKit, type ProfileInfo } from './drivers.ts';
import { startEdgeHttp, type EdgeHttp } from './http.ts';
import { renderMetrics } from './metrics.ts';
import { checkRecords } from './records.ts';
import { EnrolmentError, openRegistry, validateDeviceCsv, validateEnrolment, type EnrolledDevice, type Problem, type Registry } from './registry.ts';
import { DeviceRunner } from './scheduler.ts';
import { startUplink, type Uplink, type UplinkStats } from './uplink.ts';

export const EDGE_VERSION = '0.1.0';

export interface GatewayDeps {
  clock?: Clock;
  log?: Logger;
  /** the device-drivers module by default */
  drivers?: DriverKit;
  /** jitter source (tests pass a fixed one) */
  random?: () => number;
}

export interface DeviceTestResult {
  ok: boolean;
  device: string;
  health: DeviceHealth | null;
  observations: Observation[];
  message: string;
}

export interface DeviceView extends EnrolledDevice {
  state: HealthState;
  lastSeen: number | null;
  lastError: string | null;
  expectedIntervalMs: number | null;
}

export interface GatewayRuntimeStatus {
  gatewayId: string;
  running: boolean;
  uplink: UplinkStats | null;
  buffer: BufferStats;
  devices: { online: number; degraded: number; offline: number };
  bufferErrors: number;
  /** when a buffer write last failed (disk full, I/O error): records are being lost */
  lastBufferErrorAt: number | null;
  /** a buffer write failed within the last minute */
  bufferFailing: boolean;
  startedAt: number | null;
}

export interface Gateway {
  readonly config: EdgeConfig;
  readonly registry: Registry;
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): GatewayRuntimeStatus;
  /** enrolled devices with their live health */
  listDevices(): DeviceView[];
  /** validate, (by default) test live, then save and start polling; throws EnrolmentError */
  enrol(input: unknown, opts?: { test?: boolean; source?: string; replace?: boolean }): Promise<{ device: EnrolledDevice; test: DeviceTestResult | null }>;
  /** test a device (enrolled id, or an unsaved spec) without saving */
  testDevice(input: string | unknown, opts?: { waitMs?: number }): Promise<DeviceTestResult>;
  remove(id: string): Promise<boolean>;
  /** validate a whole CSV; imports all rows or none; throws EnrolmentError with every problem */
  importCsv(text: string, opts?: { source?: string }): Promise<{ added: string[]; updated: string[] }>;
  /** write a point on a device (e.g. release a gate) */
  writeDevice(device: string, point: string, value: number | boolean | string): Promise<void>;
  /** buffer records as if a device had produced them (tools, tests) */
  inject(records: NewRecord[]): void;
  metrics(): string;
  readonly http: EdgeHttp | null;
  readonly deviceBroker: DeviceBroker | null;
  /** for tests: the runner of a device */
  runner(id: string): DeviceRunner | undefined;
}

export async function createGateway(config: EdgeConfig, deps: GatewayDeps = {}): Promise<Gateway> {
  const clock = deps.clock ?? systemClock;
  const log = (deps.log ?? createLogger()).child(`edge:${config.gatewayId}`);
  const random = deps.random ?? Math.random;
  let kit: DriverKit | undefined = deps.drivers;
  const getKit = async () => (kit ??= await loadDefaultDriverKit());
  let profiles: ProfileInfo[] | undefined;
  const getProfiles = async () => (profiles ??= await (await getKit()).loadProfiles());

  const registry = openRegistry(join(config.dataDir, 'registry.sqlite'), () => clock.now(), { secretKey: config.edgeSecretKey });
  // Opened on first use: the CLI enrols and tests devices through a gateway it never starts, and
  // must not touch the buffer a running gateway holds.
  let bufferHandle: RecordBuffer | null = null;
  const buf = (): RecordBuffer =>
    (bufferHandle ??= openSqliteBuffer({
      file: join(config.dataDir, 'buffer.sqlite'),
      maxRecords: effectiveCap(config),
      synchronous: config.buffer.synchronous,
      clock,
    }));

  const topics = {
    readings: buildTopic({ county: config.county, gatewayId: config.gatewayId, channel: 'readings' }),
    events: buildTopic({ county: config.county, gatewayId: config.gatewayId, channel: 'events' }),
    status: buildTopic({ county: config.county, gatewayId: config.gatewayId, channel: 'status' }),
    commands: buildTopic({ county: config.county, gatewayId: config.gatewayId, channel: 'cmd' }) + '/#',
    commandResults: buildTopic({ county: config.county, gatewayId: config.gatewayId, channel: 'cmd-result' }),
    receipts: buildTopic({ county: config.county, gatewayId: config.gatewayId, channel: 'receipt' }),
  };

  const runners = new Map<string, { runner: DeviceRunner; key: string }>();
  let uplink: Uplink | null = null;
  let http: EdgeHttp | null = null;
  let deviceBroker: DeviceBroker | null = null;
  let running = false;
  let closed = false;
  let statesKnown = false;

  async function settleStates(): Promise<void> {
    let timer: unknown = null;
    await Promise.race([
      Promise.all([...runners.values()].map((r) => r.runner.ready)),
      new Promise<void>((resolve) => (timer = clock.setTimeout(resolve, 5_000))),
    ]);
    if (timer) clock.clearTimeout(timer);
    statesKnown = true;
    if (running && uplink?.state() === 'connected') uplink.publishBirth().catch((e) => log.warn('birth not acknowledged', { error: (e as Error).message }));
  }
  let startedAt: number | null = null;
  let bufferErrors = 0;
  let lastBufferErrorAt: number | null = null;
  let watchTimer: unknown = null;
  let lastDataVersion = -1;
  let dropsUnreported = 0;
  let lastDropReport = 0;
  let dropTimer: unknown = null;
  const verifiedPasswords = new Map<string, string>();
  /** device id → password of an MQTT device being tested before it is enrolled */
  const pendingLogins = new Map<string, string>();

  // ---- buffer in, uplink out
  /**
   * Check each record against the contract, set bad ones aside (each with a health event), buffer
   * the rest in one transaction. False when the buffer could not take them (the device broker
   * then refuses the device's message; a poll's records are lost and counted).
   */
  function emit(records: NewRecord[], opts?: { enforceCap?: boolean }): boolean {
    const { good, bad } = checkRecords(records);
    const out = bad.length ? [...good, ...bad.map(quarantineEvent)] : good;
    let r;
    try {
      if (bad.length) buf().quarantine(bad);
      r = buf().append(out, opts);
    } catch (e) {
      bufferErrors++;
      lastBufferErrorAt = clock.now();
      log.error('buffer write failed; records lost', { records: records.length, error: (e as Error).message });
      return false;
    }
    for (const q of bad) log.warn('记录不符合协议，已隔离 record quarantined: it breaks the wire contract', { device: q.device, reason: q.reason });
    if (r.dropped > 0) noteDrops(r.dropped);
    uplink?.wake();
    return true;
  }

  /** gateway.record_quarantined: the centre learns of every record set aside, never of its content */
  function quarantineEvent(q: QuarantineEntry): NewRecord {
    return { kind: 'event', device: config.gatewayId, type: 'gateway.record_quarantined', ts: clock.now(), priority: 'normal', data: { device: q.device, reason: q.reason.slice(0, 300) } };
  }

  /** A device message its driver could not read: quarantined (without its content) and reported. */
  function quarantineUnreadable(deviceId: string, topic: string, reason: string, bytes: number): boolean {
    const device = registry.list().find((d) => hostOf(d.url) === deviceId)?.id ?? deviceId;
    const q: QuarantineEntry = { device, reason: `unreadable device message on ${topic}: ${reason}`.slice(0, 500), raw: JSON.stringify({ device, topic, bytes }) };
    try {
      buf().quarantine([q]);
      buf().append([quarantineEvent(q)]);
    } catch (e) {
      bufferErrors++;
      lastBufferErrorAt = clock.now();
      log.error('buffer write failed; unreadable device message not acknowledged', { device, error: (e as Error).message });
      return false;
    }
    uplink?.wake();
    return true;
  }

  /** Drops are reported as an event (never itself dropped) at most once a minute, and in metrics and birth. */
  function noteDrops(n: number): void {
    dropsUnreported += n;
    const due = lastDropReport + 60_000 - clock.now();
    if (due <= 0) reportDrops();
    else if (!dropTimer) dropTimer = clock.setTimeout(() => { dropTimer = null; reportDrops(); }, due);
  }
  function reportDrops(): void {
    if (dropsUnreported === 0) return;
    const n = dropsUnreported;
    dropsUnreported = 0;
    lastDropReport = clock.now();
    log.warn('buffer full: oldest routine readings dropped', { dropped: n, total: buf().stats().dropped, maxRecords: effectiveCap(config) });
    emit(
      [{ kind: 'event', device: config.gatewayId, type: 'gateway.buffer_dropped', ts: clock.now(), priority: 'normal', data: { dropped: n, total: buf().stats().dropped, maxRecords: effectiveCap(config) } }],
      { enforceCap: false },
    );
  }

  // ---- devices
  const driverCtx = () => ({
    clock,
    log: log.child('driver'),
    ...(deviceBroker ? { deviceBroker: deviceBroker.handle } : {}),
    ...(config.idHashKey ? { idHashKey: config.idHashKey } : {}),
  });
  const specOf = (d: EnrolledDevice): DeviceSpec => ({
    id: d.id,
    profile: d.profile,
    url: d.url,
    ...(d.name ? { name: d.name } : {}),
    ...(d.building ? { building: d.building } : {}),
    ...(d.room ? { room: d.room } : {}),
    ...(d.intervalMs ? { intervalMs: d.intervalMs } : {}),
  });

  // One reconcile at a time (enrolments, commands and the file watch all trigger it).
  let reconciling: Promise<boolean> = Promise.resolve(false);
  function reconcile(): Promise<boolean> {
    const next = reconciling.then(reconcileNow, reconcileNow);
    reconciling = next.catch(() => false);
    return next;
  }

  async function reconcileNow(): Promise<boolean> {
    if (!running) return false;
    lastDataVersion = registry.dataVersion();
    const want = new Map(registry.list().map((d) => [d.id, d]));
    let changed = false;
    for (const [id, r] of runners) {
      const d = want.get(id);
      if (!d || JSON.stringify(specOf(d)) !== r.key) {
        runners.delete(id);
        changed = true;
        await r.runner.stop();
      }
    }
    const all = await getProfiles().catch((e) => {
      log.error('device profiles could not be loaded', { error: (e as Error).message });
      return [] as ProfileInfo[];
    });
    const starting: Array<Promise<void>> = [];
    for (const d of want.values()) {
      if (runners.has(d.id)) continue;
      const profile = all.find((p) => p.id === d.profile);
      if (!profile) {
        log.error('device has an unknown profile; not polled', { device: d.id, profile: d.profile });
        continue;
      }
      const spec = specOf(d);
      const runner = new DeviceRunner({
        spec,
        profile,
        clock,
        log: log.child(`device:${d.id}`),
        jitter: config.scheduler.jitter,
        random,
        createDriver: async (s) => (await getKit()).createDriver(s, driverCtx()),
        emit,
      });
      runners.set(d.id, { runner, key: JSON.stringify(spec) });
      changed = true;
      // devices start side by side: one that times out connecting does not hold up the rest
      starting.push(runner.start().catch((e) => log.error('device failed to start', { device: d.id, error: (e as Error).message })));
    }
    await Promise.all(starting);
    if (changed && statesKnown && uplink?.state() === 'connected') uplink.publishBirth().catch(() => {});
    return changed;
  }

  function deviceView(d: EnrolledDevice): DeviceView {
    const r = runners.get(d.id)?.runner;
    const h = r?.health();
    return {
      ...d,
      state: h?.state ?? 'offline',
      lastSeen: h?.lastSeen ?? null,
      lastError: h?.lastError ?? null,
      expectedIntervalMs: r ? r.integrityMs : null,
    };
  }

  function birth(): GatewayStatus {
    type Caps = NonNullable<GatewayStatus['devices']>[number]['capabilities'];
    const capabilitiesOf = (id: string): { capabilities?: Caps } => {
      const c = (profiles?.find((p) => p.id === id) as { capabilities?: Caps } | undefined)?.capabilities;
      return c ? { capabilities: c } : {};
    };
    const st = buf().stats();
    return {
      v: 1,
      gateway: config.gatewayId,
      state: 'online',
      ts: clock.now(),
      version: EDGE_VERSION,
      devices: registry.list().map((d) => {
        const v = deviceView(d);
        const loc = [d.building, d.room].filter(Boolean).join(' ');
        return {
          id: d.id,
          profile: d.profile,
          ...(d.name ? { name: d.name.slice(0, 200) } : {}),
          state: v.state,
          lastSeen: v.lastSeen && v.lastSeen >= 946_684_800_000 ? v.lastSeen : null,
          ...(v.expectedIntervalMs ? { expectedIntervalMs: v.expectedIntervalMs } : {}),
          ...(loc ? { location: loc.slice(0, 200) } : {}),
          ...(d.building ? { building: d.building.slice(0, 100) } : {}),
          ...(d.room ? { room: d.room.slice(0, 100) } : {}),
          // what it can do, from its profile (device-drivers attaches it when loading the catalogue)
          ...capabilitiesOf(d.profile),
        };
      }),
      buffer: { depth: st.depth, dropped: st.dropped },
    };
  }

  async function testDevice(input: string | unknown, opts: { waitMs?: number } = {}): Promise<DeviceTestResult> {
    let spec: DeviceSpec;
    if (typeof input === 'string') {
      const d = registry.get(input);
      if (!d) return { ok: false, device: input, health: null, observations: [], message: `未登记的设备 device "${input}" is not enrolled` };
      spec = specOf(d);
    } else {
      const v = validateEnrolment(input, await getProfiles());
      if (!v.device) throw new EnrolmentError(v.problems);
      const { password, ...rest } = v.device;
      spec = rest;
      // an MQTT device not enrolled yet may log in with the credentials under test, for the test's length
      if (password && hostOf(rest.url)) pendingLogins.set(hostOf(rest.url), password);
    }
    // A running device is tested through its own driver (a second Modbus connection may be refused).
    const running = runners.get(spec.id)?.runner.currentDriver;
    let driver: DeviceDriver | null = null;
    try {
      driver = running ?? (await (await getKit()).createDriver(spec, driverCtx()));
      const observations: Observation[] = [];
      if (driver.poll) {
        observations.push(...(await driver.poll()));
      } else if (driver.subscribe && !running) {
        const waitMs = opts.waitMs ?? 5000;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, waitMs);
          void driver!.subscribe!((o) => {
            observations.push(o);
            clearTimeout(t);
            resolve();
          });
        });
      }
      const health = driver.health();
      const ok = driver.poll ? health.state !== 'offline' && observations.length > 0 : observations.length > 0 || health.state === 'online';
      return {
        ok,
        device: spec.id,
        health,
        observations,
        message: ok
          ? `设备应答正常 device answered: ${observations.length} observation(s)`
          : `设备无应答 device did not answer${health.lastError ? `: ${health.lastError}` : ''}`,
      };
    } catch (e) {
      const code = (e as { code?: string }).code;
      return { ok: false, device: spec.id, health: driver?.health() ?? null, observations: [], message: `${(e as Error).message}${code ? ` (${code})` : ''}` };
    } finally {
      if (driver && !running) await driver.close().catch(() => {});
      if (typeof input !== 'string') pendingLogins.delete(hostOf(spec.url));
    }
  }

  async function enrol(input: unknown, opts: { test?: boolean; source?: string; replace?: boolean } = {}) {
    const v = validateEnrolment(input, await getProfiles());
    if (!v.device) throw new EnrolmentError(v.problems);
    if (!opts.replace && registry.get(v.device.id)) {
      throw new EnrolmentError([{ field: 'id', message: `设备已登记 "${v.device.id}" is already enrolled; remove it first or replace it` }]);
    }
    let test: DeviceTestResult | null = null;
    if (opts.test !== false) {
      test = await testDevice(v.device);
      if (!test.ok) throw new EnrolmentError([{ field: 'url', message: `实时测试失败，未保存 live test failed, not saved: ${test.message}` }]);
    }
    const device = registry.upsert(v.device, opts.source ?? 'api');
    verifiedPasswords.delete(device.id);
    await reconcile();
    return { device, test };
  }

  async function remove(id: string): Promise<boolean> {
    const ok = registry.remove(id);
    verifiedPasswords.delete(id);
    if (ok) await reconcile();
    return ok;
  }

  async function importCsv(text: string, opts: { source?: string } = {}) {
    const r = validateDeviceCsv(text, await getProfiles());
    if (r.problems.length) throw new EnrolmentError(r.problems);
    const added: string[] = [];
    const updated: string[] = [];
    for (const d of r.devices) (registry.get(d.id) ? updated : added).push(d.id);
    registry.upsertMany(r.devices, opts.source ?? 'import');
    for (const d of r.devices) verifiedPasswords.delete(d.id);
    await reconcile();
    return { added, updated };
  }

  async function writeDevice(device: string, point: string, value: number | boolean | string) {
    const d = runners.get(device)?.runner.currentDriver;
    if (!d) {
      const err = new Error(registry.get(device) ? `设备未连接 device "${device}" is not connected` : `未登记的设备 device "${device}" is not enrolled`);
      Object.assign(err, { code: registry.get(device) ? 'device_unavailable' : 'unknown_device', retryable: !!registry.get(device) });
      throw err;
    }
    await d.write(point, value);
  }

  /** MQTT devices log in with their device id (the url's host) and their enrolment password. */
  function authenticateDevice(username: string, password: string): string | null {
    const pending = pendingLogins.get(username);
    if (pending !== undefined) {
      const want = Buffer.from(pending);
      const got = Buffer.from(password);
      if (want.length === got.length && timingSafeEqual(want, got)) return username;
    }
    const d = registry.list().find((x) => x.url.startsWith('mqtt:') && (hostOf(x.url) === username || x.id === username));
    if (!d) return null;
    const fp = createHash('sha256').update(password).digest('hex');
    if (verifiedPasswords.get(d.id) !== fp) {
      if (!registry.verifyPassword(d.id, password)) return null;
      verifiedPasswords.set(d.id, fp);
    }
    return hostOf(d.url) || d.id;
  }

  const commands = createCommandHandler({
    allow: config.commands.allow,
    maxAgeMs: config.commands.maxAgeMs,
    registry,
    clock,
    log: log.child('commands'),
    publishResult: async (r) => {
      if (uplink) await uplink.publishResult(r);
    },
    target: {
      async upsertDevice(input, source) {
        try {
          const r = await enrol(input, { test: false, source, replace: true });
          return { ok: true, message: `已登记 enrolled ${r.device.id}` };
        } catch (e) {
          if (e instanceof EnrolmentError) return { ok: false, message: e.message };
          throw e;
        }
      },
      writeDevice,
      rebirth: async () => {
        if (!uplink) throw Object.assign(new Error('uplink not started'), { code: 'uplink_down', retryable: true });
        await uplink.publishBirth();
      },
      removeDevice: (id) => remove(id),
      async testDevice(input) {
        let r: DeviceTestResult;
        try {
          r = await testDevice(input, { waitMs: 5000 });
        } catch (e) {
          if (e instanceof EnrolmentError) return { ok: false, message: e.message, data: { device: typeof input === 'string' ? input : String(input.id ?? ''), problems: e.problems } };
          throw e;
        }
        // at most 50 observations travel back; the test's verdict and health always do
        return { ok: r.ok, message: r.message, data: { ...r, observations: r.observations.slice(0, 50) } };
      },
      discover: (q) => discover(q),
    },
  });

  /** Devices that answer on the school's network: ONVIF cameras (WS-Discovery) or Modbus units on a port. */
  async function discover(q: DiscoverQuery): Promise<{ message: string; data: Record<string, unknown> }> {
    const k = await getKit();
    const budget = q.timeoutMs ?? (q.protocol === 'onvif' ? 3000 : 20_000);
    if (q.protocol === 'onvif') {
      if (!k.discoverOnvif) throw Object.assign(new Error('此网关不支持 ONVIF 搜索 this gateway build has no ONVIF discovery'), { code: 'not_supported', retryable: false });
      let address: string | undefined;
      let port: number | undefined;
      if (q.target) {
        const m = /^\[?([^\]\s]+?)\]?(?::(\d{1,5}))?$/.exec(q.target.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, ''));
        if (!m) throw Object.assign(new Error(`搜索目标无效 target "${q.target}": write HOST or HOST:PORT (WS-Discovery by unicast)`), { code: 'bad_target', retryable: false });
        address = m[1];
        port = m[2] ? Number(m[2]) : undefined;
      }
      const found = await k.discoverOnvif({ ...(address ? { address } : {}), ...(port ? { port } : {}), timeoutMs: budget });
      const enrolled = new Set(registry.list().map((d) => hostPortOf(d.url)));
      const cameras = found.map((c) => ({ ...c, enrolled: enrolled.has(hostPortOf(c.url)) }));
      return {
        message: `发现 ${cameras.length} 台 ONVIF 摄像机 found ${cameras.length} ONVIF camera(s)`,
        data: { protocol: 'onvif', found: cameras },
      };
    }
    if (!k.discoverModbusUnits) throw Object.assign(new Error('此网关不支持 Modbus 搜索 this gateway build has no Modbus discovery'), { code: 'not_supported', retryable: false });
    if (!q.target) throw Object.assign(new Error('Modbus 搜索需要目标 target: a modbus-tcp://HOST:PORT or modbus-rtu:///dev/ttyX?baud=9600 url'), { code: 'bad_target', retryable: false });
    const unitInUrl = /[?&]unit=(\d+)/.exec(q.target);
    const units = q.units ?? (unitInUrl ? [Number(unitInUrl[1])] : q.target.startsWith('modbus-rtu:') ? range(1, 247) : range(1, 16));
    // the whole search fits the budget: each silent unit gets its share (50–1000 ms)
    const perUnit = Math.max(50, Math.min(1000, Math.floor(budget / units.length)));
    const found = await k.discoverModbusUnits(q.target, units, { timeoutMs: perUnit, log: log.child('discover') });
    const enrolled = new Map(registry.list().map((d) => [d.url.replace(/[?&]timeout=\d+/, ''), d.id]));
    const units2 = found.map((u) => ({ ...u, enrolledAs: enrolled.get(u.url) ?? null }));
    return {
      message: `${units.length} 个地址中 ${units2.length} 个有应答 ${units2.length} of ${units.length} unit(s) answered`,
      data: { protocol: 'modbus', target: q.target, asked: units.length, found: units2 },
    };
  }

  const gw: Gateway = {
    config,
    registry,
    get http() {
      return http;
    },
    get deviceBroker() {
      return deviceBroker;
    },
    async start() {
      if (running) return;
      if (closed) throw new Error('this gateway was stopped; create a new one');
      try {
        running = true;
        startedAt = clock.now();
        // seed the registry from the config file (the config wins for the devices it names)
        if (config.devices.length) {
          const all = await getProfiles();
          const problems: Problem[] = [];
          const ok = config.devices.filter((d, i) => {
            const v = validateEnrolment(d, all, i);
            problems.push(...v.problems);
            return !!v.device;
          });
          if (problems.length) log.error('some configured devices are invalid and were not seeded', { problems: problems.map((p) => `devices[${p.row}].${p.field}: ${p.message}`) });
          registry.upsertMany(ok, 'config');
        }
        // ports first: a taken port fails the start before anything connects
        http = await startEdgeHttp({ gateway: gw, host: config.http.host, port: config.http.port, token: config.http.token, log: log.child('http') });
        const k = await getKit();
        if (k.startDeviceBroker) {
          // created now (drivers need its handle), listening only once the drivers are registered:
          // a device's message is acknowledged only after the buffer has it (docs/delivery.md)
          deviceBroker = await k.startDeviceBroker({
            port: config.deviceBroker.port,
            host: config.deviceBroker.host,
            authenticate: authenticateDevice,
            log: log.child('device-broker'),
            listen: false,
            custodyFailures: () => bufferErrors,
            onUnreadable: quarantineUnreadable,
            knownDevices: () => registry.list().map((d) => d.id),
          });
        }
        uplink = await startUplink({
          url: config.uplink.url,
          gatewayId: config.gatewayId,
          username: config.uplink.username ?? config.gatewayId,
          password: config.uplink.password,
          tls: config.uplink.tls,
          keepaliveSeconds: config.uplink.keepaliveSeconds,
          reconnectMs: config.uplink.reconnectMs,
          batchSize: config.uplink.batchSize,
          inflight: config.uplink.inflight,
          receiptTimeoutMs: config.uplink.receiptTimeoutMs,
          maxRecordsPerSecond: config.buffer.replayPerSecond,
          topics,
          buffer: buf(),
          clock,
          log: log.child('uplink'),
          birth,
          onCommand: (topic, payload) => void commands.handle(topic, payload),
          // drops during an outage are reported as soon as the centre can hear it
          onConnected: () => reportDrops(),
          birthReady: () => statesKnown,
        });
        await reconcile();
        await deviceBroker?.listen?.();
        // The birth tells the centre each device's state: wait until it is known (first poll or
        // message) rather than announce every device offline at start, at most 5 s.
        void settleStates();
        // the CLI writes the registry file directly; pick its changes up
        watchTimer = clock.setInterval(() => {
          if (registry.dataVersion() !== lastDataVersion) void reconcile().catch((e) => log.error('reconcile failed', { error: (e as Error).message }));
        }, 2000);
        log.info('gateway started', { devices: runners.size, http: http.url, deviceBroker: deviceBroker?.port, seq: buf().stats().lastSeq, depth: buf().stats().depth });
      } catch (e) {
        log.error('gateway failed to start', { error: (e as Error).message });
        await gw.stop().catch(() => {});
        throw e;
      }
    },
    async stop() {
      if (closed) return;
      closed = true;
      if (!running) {
        bufferHandle?.close();
        registry.close();
        return;
      }
      running = false;
      if (watchTimer) clock.clearInterval(watchTimer);
      if (dropTimer) clock.clearTimeout(dropTimer);
      for (const { runner } of runners.values()) await runner.stop();
      runners.clear();
      await http?.close().catch(() => {});
      await uplink?.stop().catch(() => {});
      await deviceBroker?.close().catch(() => {});
      http = null;
      uplink = null;
      deviceBroker = null;
      bufferHandle?.close();
      registry.close();
    },
    status() {
      const devices = { online: 0, degraded: 0, offline: 0 };
      for (const { runner } of runners.values()) devices[runner.health().state]++;
      return { gatewayId: config.gatewayId, running, uplink: uplink?.stats() ?? null, buffer: buf().stats(), devices, bufferErrors, lastBufferErrorAt, bufferFailing: lastBufferErrorAt !== null && clock.now() - lastBufferErrorAt < 60_000, startedAt };
    },
    listDevices: () => registry.list().map(deviceView),
    enrol,
    testDevice,
    remove,
    importCsv,
    writeDevice,
    inject: (records) => void emit(records),
    metrics: () =>
      renderMetrics({
        gatewayId: config.gatewayId,
        status: gw.status(),
        runners: [...runners.values()].map((r) => r.runner),
        commands: commands.counters,
      }),
    runner: (id) => runners.get(id)?.runner,
  };
  return gw;
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** `host:port` of a device url (credentials and path left out), for matching discoveries to enrolments */
function hostPortOf(url: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/]*@)?([^/?#]+)/i.exec(url);
  return (m?.[1] ?? url).toLowerCase();
}

/** the device id of an `mqtt://DEVICE-ID` url (case kept; URL() would lower-case it) */
function hostOf(url: string): string {
  return /^mqtt:\/\/([^/?#:@]+)/.exec(url)?.[1] ?? '';
}

/** Bytes a buffered record takes on disk: ~65 measured for a reading (200k readings); 100 leaves room for events. */
export const BUFFER_BYTES_PER_RECORD = 100;

function effectiveCap(config: EdgeConfig): number {
  const byBytes = config.buffer.maxBytes ? Math.floor(config.buffer.maxBytes / BUFFER_BYTES_PER_RECORD) : Infinity;
  return Math.max(100, Math.min(config.buffer.maxRecords, byBytes));
}
