// The Modbus driver against a third-party slave (Debian's pymodbus 3.0), over TCP and over RTU
// through a socat pty pair; exception, timeout, malformed-frame and silent-slave paths; and the
// technician's `xiaoan device read` against it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialPort } from 'serialport';
import { silentLogger, systemClock } from '../contract/index.ts';
import { createDriver, discoverModbusUnits, freePort, getProfile, LineRegistry, parseProfile, type DeviceDriver, type ModbusDriver, type ModbusProfile, type Observation } from '../device-drivers/index.ts';
import { startPtyPair, startPymodbus } from './drivers-peers.ts';

const ctx = { clock: systemClock, log: silentLogger };
const readings = (o: Observation[]) => Object.fromEntries(o.filter((x) => x.kind === 'reading').map((x) => [(x as { metric: string }).metric, (x as { value: number }).value]));

// a profile whose last holding register (address 9, "40010") lies past pymodbus's 9-register block
const BEYOND_YAML = `
id: beyond-test
protocol: modbus
category: environment
description: { zh: 测试, en: test }
poll: { interval: 1s, integrity: 1m }
modbus: { timeout: 300, retries: 0 }
points:
  - { name: level, table: input, address: 0, type: uint16 }
  - { name: setpoint, table: holding, address: 9, type: uint16 }
`;
const BEYOND = parseProfile('beyond.yaml', BEYOND_YAML).profile as ModbusProfile;

describe('Modbus TCP against pymodbus', () => {
  let port = 0;
  let peer: { stop(): Promise<void> };
  const drivers: DeviceDriver[] = [];
  beforeAll(async () => {
    port = await freePort();
    peer = await startPymodbus(['tcp', String(port), '1,2']);
  });
  afterAll(async () => {
    for (const d of drivers) await d.close();
    await peer?.stop();
  });

  it('reads the smoke profile and reports the alarm on its rising edge', async () => {
    const d = await createDriver({ id: 'smoke-1', profile: 'smoke-photoelectric-generic', url: `modbus-tcp://127.0.0.1:${port}?unit=1` }, ctx, { modbus: { lines: new LineRegistry() } });
    drivers.push(d);
    const obs = await d.poll!();
    expect(readings(obs)).toEqual({ smoke_density: 0.1, alarm: 1, fault: 0, alarm_threshold: 1 });
    expect(obs.filter((o) => o.kind === 'event')).toEqual([expect.objectContaining({ type: 'smoke.alarm', priority: 'alarm' })]);
    expect(d.health().state).toBe('online');
    await d.write('alarm_threshold', 0.2); // FC 6
    expect(readings(await d.poll!()).alarm_threshold).toBe(0.2);
  });

  it('two units behind one endpoint share one connection', async () => {
    const lines = new LineRegistry();
    const a = (await createDriver({ id: 'a', profile: 'temp-humidity-generic', url: `modbus-tcp://127.0.0.1:${port}?unit=1` }, ctx, { modbus: { lines } })) as ModbusDriver;
    const b = (await createDriver({ id: 'b', profile: 'temp-humidity-generic', url: `modbus-tcp://127.0.0.1:${port}?unit=2` }, ctx, { modbus: { lines } })) as ModbusDriver;
    drivers.push(a, b);
    expect(a.line).toBe(b.line);
    const [ra, rb] = await Promise.all([a.poll!(), b.poll!()]);
    expect(readings(ra).temperature).toBe(10); // 100 * 0.1
    expect(readings(rb).temperature).toBe(20);
  });

  it('an exception reply carries its code and the register, as a technician reads it', async () => {
    const d = await createDriver({ id: 'x', profile: BEYOND.id, url: `modbus-tcp://127.0.0.1:${port}?unit=1` }, ctx, { profile: BEYOND, modbus: { lines: new LineRegistry() } });
    drivers.push(d);
    const obs = await d.poll!();
    expect(readings(obs)).toEqual({ level: 100 });
    expect(d.health()).toMatchObject({ state: 'degraded', lastError: expect.stringMatching(/exception 2 \(illegal data address\) at register 40010/) });
  });

  it('a unit that does not exist times out, then backs off without touching the wire', async () => {
    const d = (await createDriver({ id: 'ghost', profile: BEYOND.id, url: `modbus-tcp://127.0.0.1:${port}?unit=7` }, ctx, { profile: BEYOND, modbus: { lines: new LineRegistry() } })) as ModbusDriver;
    drivers.push(d);
    await d.poll!();
    expect(d.health()).toMatchObject({ timeouts: 1, lastError: expect.stringMatching(/timeout/) });
    await d.poll!();
    expect(d.line.unitStats(7)).toMatchObject({ wireRequests: 1 });
    expect(d.line.unitStats(7).skipped).toBeGreaterThan(0);
  });

  it('`xiaoan device read` prints JSON lines and exits 0; a closed port or an exception is one line and exit 1', async () => {
    // real processes, as a technician runs them (started together: each spends most of its time loading)
    const run = (args: string[], env: Record<string, string> = {}) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, ['bin/xiaoan.js', 'device', 'read', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (d) => (stdout += d));
        p.stderr.on('data', (d) => (stderr += d));
        p.on('exit', (status) => resolve({ status, stdout, stderr }));
      });
    const dir = mkdtempSync(join(tmpdir(), 'xiaoan-profiles-'));
    try {
      writeFileSync(join(dir, 'beyond-test.yaml'), BEYOND_YAML);
      const [ok, closed, exc] = await Promise.all([
        run(['--profile', 'temp-humidity-generic', '--url', `modbus-tcp://127.0.0.1:${port}?unit=2`]),
        run(['--profile', 'temp-humidity-generic', '--url', `modbus-tcp://127.0.0.1:${await freePort()}?unit=1`]),
        run(['--profile', 'beyond-test', '--url', `modbus-tcp://127.0.0.1:${port}?unit=1`], { XIAOAN_PROFILES: dir }),
      ]);
      expect(ok.status).toBe(0);
      const lines = ok.stdout.trim().split('\n').map((l) => JSON.parse(l));
      expect(lines).toContainEqual(expect.objectContaining({ kind: 'reading', metric: 'temperature', value: 20, quality: 'good' }));

      expect(closed.status).toBe(1);
      expect(closed.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^xiaoan device read: .*connection refused/)]);

      expect(exc.status).toBe(1);
      expect(exc.stderr.trim().split('\n')).toEqual([expect.stringMatching(/Modbus .*exception 2 \(illegal data address\) at register 40010/)]);
      expect(exc.stderr).not.toMatch(/\n\s+at /); // no stack trace
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Modbus over Serial Line §6.2.2: CRC-16, polynomial 0xA001 reflected, initial 0xFFFF. */
function crc16(b: Buffer): number {
  let crc = 0xffff;
  for (const byte of b) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}

describe('Modbus RTU over a socat pty pair', () => {
  it('pymodbus serves units 1 and 2; a silent unit 7 on the same line backs off alone', async () => {
    const pty = await startPtyPair();
    const peer = await startPymodbus(['rtu', pty.b, '19200', '1,2']).catch(async (e) => {
      await pty.stop();
      throw e;
    });
    const lines = new LineRegistry();
    const url = (u: number) => `modbus-rtu://${pty.a}?baud=19200&unit=${u}&timeout=250`;
    const profile = (await getProfile('temp-humidity-generic')) as ModbusProfile;
    const devs = (await Promise.all([1, 2, 7].map((u) => createDriver({ id: `t${u}`, profile: profile.id, url: url(u) }, ctx, { modbus: { lines } })))) as ModbusDriver[];
    try {
      expect(new Set(devs.map((d) => d.line)).size).toBe(1);
      const good: number[] = [0, 0];
      for (let round = 0; round < 8; round++) {
        const [r1, r2] = await Promise.all(devs.map((d) => d.poll!()));
        if (readings(r1!).temperature === 10) good[0]!++;
        if (readings(r2!).temperature === 20) good[1]!++;
      }
      // every poll of the answering units succeeded: the silent one never stalled them
      expect(good).toEqual([8, 8]);
      expect(devs[0]!.health().state).toBe('online');
      expect(devs[1]!.health().state).toBe('online');
      // the silent unit went on the wire for its first request and one retry, then only when its backoff allowed
      const ghost = devs[0]!.line.unitStats(7);
      expect(ghost.wireRequests).toBeLessThanOrEqual(3);
      expect(ghost.skipped).toBeGreaterThanOrEqual(5);
      expect(devs[2]!.health().state).toBe('offline');
      for (const d of devs) await d.close();
      // and a technician's discovery on the same line finds exactly the units that answer
      const found = await discoverModbusUnits(`modbus-rtu://${pty.a}?baud=19200`, [1, 2, 3], { timeoutMs: 250 });
      expect(found.map((f) => [f.unit, f.answer])).toEqual([[1, 'answered'], [2, 'answered']]);
    } finally {
      for (const d of devs) await d.close();
      await peer.stop();
      await pty.stop();
    }
  });

  it('our own RTU simulator (modbus-serial ServerSerial) answers the driver over the pty pair', async () => {
    const pty = await startPtyPair();
    const profile = (await getProfile('gas-combustible-generic')) as ModbusProfile;
    const { startModbusSimulator } = await import('../device-drivers/index.ts');
    const sim = await startModbusSimulator({ profile, serialPath: pty.b, baudRate: 19200, unitId: 3, initial: { lel_percent: 27.5, alarm_level1: true, sensor_state: 'normal' } });
    const d = await createDriver({ id: 'gas-1', profile: profile.id, url: `modbus-rtu://${pty.a}?baud=19200&unit=3` }, ctx, { modbus: { lines: new LineRegistry() } });
    try {
      const obs = await d.poll!();
      expect(readings(obs)).toMatchObject({ lel_percent: 27.5, alarm_level1: 1, alarm_level2: 0, sensor_state: 0 });
      expect(obs.filter((o) => o.kind === 'event')).toEqual([expect.objectContaining({ type: 'gas.alarm', priority: 'alarm', data: expect.objectContaining({ level: 1 }) })]);
      sim.set('sensor_state', 'fault');
      expect((await d.poll!()).filter((o) => o.kind === 'event')).toEqual([expect.objectContaining({ type: 'device.fault', data: expect.objectContaining({ state: 'fault' }) })]);
      await d.write('alarm1_setpoint', 20); // FC 6 over RTU
      expect(sim.get('alarm1_setpoint')).toBe(20);
      await d.write('relay_test', true); // FC 5
      expect(sim.get('relay_test')).toBe(true);
    } finally {
      await d.close();
      await sim.close();
      await pty.stop();
    }
  });

  it('a malformed frame (bad CRC) is counted and the next good frame recovers', async () => {
    const pty = await startPtyPair();
    // a rogue slave: answers FC 4 reads, the first with a corrupted CRC
    const rogue = new SerialPort({ path: pty.b, baudRate: 19200 });
    await new Promise<void>((r, j) => rogue.once('open', () => r()).once('error', j));
    let answered = 0;
    let buf = Buffer.alloc(0);
    rogue.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 8) {
        const req = buf.subarray(0, 8);
        buf = buf.subarray(8);
        const count = req.readUInt16BE(4);
        const body = Buffer.alloc(3 + count * 2);
        body[0] = req[0]!;
        body[1] = req[1]!;
        body[2] = count * 2;
        for (let i = 0; i < count; i++) body.writeUInt16BE(215 + i, 3 + i * 2);
        const crc = Buffer.alloc(2);
        crc.writeUInt16LE(crc16(body) ^ (answered++ === 0 ? 0xffff : 0));
        rogue.write(Buffer.concat([body, crc]));
      }
    });
    const profile = parseProfile('one.yaml', `
id: one-register
protocol: modbus
category: environment
description: { zh: 测试, en: test }
poll: { interval: 1s, integrity: 1m }
modbus: { timeout: 300, retries: 1 }
points:
  - { name: temperature, table: input, address: 0, type: int16, scale: 0.1 }
`).profile as ModbusProfile;
    const d = await createDriver({ id: 'crc', profile: profile.id, url: `modbus-rtu://${pty.a}?baud=19200&unit=1` }, ctx, { profile, modbus: { lines: new LineRegistry() } });
    try {
      const obs = await d.poll!();
      expect(readings(obs)).toEqual({ temperature: 21.5 }); // the retry got the good frame
      expect(d.health()).toMatchObject({ state: 'online', crcErrors: 1 });
    } finally {
      await d.close();
      await new Promise<void>((r) => rogue.close(() => r()));
      await pty.stop();
    }
  });
});
