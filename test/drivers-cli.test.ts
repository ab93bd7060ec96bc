// `xiaoan device profiles|read|discover` as a technician runs them: a real process, JSON lines on
// stdout, one line on stderr and a non-zero exit on failure, never a stack trace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { freePort, startOnvifSimulator, type OnvifSimulator } from '../device-drivers/index.ts';
import { startPymodbus } from './drivers-peers.ts';

function xiaoan(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['bin/xiaoan.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

const oneLine = (s: string) => {
  const lines = s.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(s).not.toMatch(/\n\s+at /);
  return lines[0]!;
};

let cam: OnvifSimulator;
let modbusPort = 0;
let peer: { stop(): Promise<void> };
beforeAll(async () => {
  cam = await startOnvifSimulator();
  modbusPort = await freePort();
  peer = await startPymodbus(['tcp', String(modbusPort), '1,2']);
});
afterAll(async () => {
  await cam?.close();
  await peer?.stop();
});

describe('xiaoan device …', () => {
  it('profiles: one JSON line per profile', async () => {
    const r = await xiaoan(['device', 'profiles']);
    expect(r.status).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.length).toBeGreaterThanOrEqual(8);
    expect(rows).toContainEqual({ id: 'smoke-photoelectric-generic', protocol: 'modbus', category: 'fire', description: { zh: '点型光电感烟火灾探测器', en: 'Photoelectric point smoke detector' } });
  });

  it('read: a camera describes itself; wrong credentials are one line and exit 1', async () => {
    const ok = await xiaoan(['device', 'read', '--profile', 'onvif-camera-generic', '--url', cam.url]);
    expect(ok.status).toBe(0);
    const info = JSON.parse(oneLine(ok.stdout));
    expect(info).toMatchObject({ kind: 'camera', model: 'SIM-IPC-1', device: expect.stringContaining(':***@') });
    const bad = await xiaoan(['device', 'read', '--profile', 'onvif-camera-generic', '--url', cam.url.replace(':admin123@', ':nope@')]);
    expect(bad.status).toBe(1);
    expect(oneLine(bad.stderr)).toMatch(/^xiaoan device read: 用户名或密码错误 wrong credentials for camera 127\.0\.0\.1:\d+$/);
    expect(bad.stderr).not.toContain('nope');
  });

  it('read: bad input is one line saying what to do', async () => {
    const [r1, r2, r3, r4] = await Promise.all([
      xiaoan(['device', 'read', '--profile', 'no-such-model', '--url', 'modbus-tcp://127.0.0.1:1']),
      xiaoan(['device', 'read', '--profile', 'smoke-photoelectric-generic', '--url', 'http://x']),
      xiaoan(['device', 'read', '--profile', 'smoke-photoelectric-generic', '--url', 'modbus-tcp://127.0.0.1:502?unit=999']),
      xiaoan(['device', 'read', '--profile', 'gate-controller-generic', '--url', 'mqtt://gate-1']),
    ]);
    for (const r of [r1, r2, r3, r4]) expect(r!.status).toBe(1);
    expect(oneLine(r1!.stderr)).toMatch(/unknown device profile "no-such-model"; known: .*smoke-photoelectric-generic/);
    expect(oneLine(r2!.stderr)).toMatch(/does not fit profile smoke-photoelectric-generic \(modbus\); use modbus-tcp:/);
    expect(oneLine(r3!.stderr)).toMatch(/unit must be 0–255/);
    expect(oneLine(r4!.stderr)).toMatch(/MQTT device/);
  });

  it('discover: ONVIF cameras by unicast WS-Discovery, Modbus units on a port', async () => {
    const closedPort = await freePort();
    const [onvif, units, none] = await Promise.all([
      xiaoan(['device', 'discover', '--onvif', '--address', '127.0.0.1', '--port', String(cam.discoveryPort), '--timeout', '500']),
      xiaoan(['device', 'discover', '--modbus', `modbus-tcp://127.0.0.1:${modbusPort}`, '--units', '1-3', '--timeout', '300']),
      xiaoan(['device', 'discover', '--modbus', `modbus-tcp://127.0.0.1:${closedPort}`, '--units', '1']),
    ]);
    expect(onvif.status).toBe(0);
    expect(JSON.parse(oneLine(onvif.stdout))).toMatchObject({ url: `onvif://127.0.0.1:${cam.port}`, name: 'SIM-IPC-1' });

    expect(units.status).toBe(0);
    expect(units.stdout.trim().split('\n').map((l) => JSON.parse(l))).toEqual([
      { url: `modbus-tcp://127.0.0.1:${modbusPort}?unit=1`, unit: 1, answer: 'answered' },
      { url: `modbus-tcp://127.0.0.1:${modbusPort}?unit=2`, unit: 2, answer: 'answered' },
    ]);
    expect(none.status).toBe(1);
    expect(oneLine(none.stderr)).toMatch(/connection refused/);
  });
});
