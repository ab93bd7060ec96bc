// `xiaoan device profiles|read|discover` as a technician runs them: JSON lines on stdout, one line
// on stderr and a non-zero exit on failure, never a stack trace. Most cases call the CLI's main()
// in this process (same code path, without paying TypeScript start-up per case on a shared
// machine); the wrong-password case runs as a real process, as do three in drivers-pymodbus.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { freePort, startOnvifSimulator, type OnvifSimulator } from '../device-drivers/index.ts';
import { startPymodbus } from './drivers-peers.ts';
import { main } from '../cli/main.ts';

/** `xiaoan …` through main() with captured output. */
async function xiaoanInProcess(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await main(args, { out: (l) => (stdout += l + '\n'), err: (l) => (stderr += l + '\n'), env: process.env });
  return { status, stdout, stderr };
}

/** `xiaoan …` as a separate process. */
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

type Run = Awaited<ReturnType<typeof xiaoan>>;
let cam: OnvifSimulator;
let modbusPort = 0;
let closedPort = 0;
let peer: { stop(): Promise<void> };
const runs: Record<string, Run> = {};
// Every invocation starts together: each process spends most of its time loading TypeScript,
// so on a shared machine running them side by side keeps the file well inside its time budget.
beforeAll(async () => {
  cam = await startOnvifSimulator();
  modbusPort = await freePort();
  closedPort = await freePort();
  peer = await startPymodbus(['tcp', String(modbusPort), '1,2']);
  const plan: Record<string, string[]> = {
    profiles: ['device', 'profiles'],
    camOk: ['device', 'read', '--profile', 'onvif-camera-generic', '--url', cam.url],
    camBad: ['device', 'read', '--profile', 'onvif-camera-generic', '--url', cam.url.replace(':admin123@', ':nope@')],
    r1: ['device', 'read', '--profile', 'no-such-model', '--url', 'modbus-tcp://127.0.0.1:1'],
    r2: ['device', 'read', '--profile', 'smoke-photoelectric-generic', '--url', 'http://x'],
    r3: ['device', 'read', '--profile', 'smoke-photoelectric-generic', '--url', 'modbus-tcp://127.0.0.1:502?unit=999'],
    r4: ['device', 'read', '--profile', 'gate-controller-generic', '--url', 'mqtt://gate-1'],
    onvif: ['device', 'discover', '--onvif', '--address', '127.0.0.1', '--port', String(cam.discoveryPort), '--timeout', '1500'],
    units: ['device', 'discover', '--modbus', `modbus-tcp://127.0.0.1:${modbusPort}`, '--units', '1-3', '--timeout', '500'],
    none: ['device', 'discover', '--modbus', `modbus-tcp://127.0.0.1:${closedPort}`, '--units', '1'],
  };
  const results = await Promise.all(Object.entries(plan).map(([k, a]) => (k === 'camBad' ? xiaoan(a) : xiaoanInProcess(a))));
  Object.keys(plan).forEach((k, i) => (runs[k] = results[i]!));
}, 120_000);
afterAll(async () => {
  await cam?.close();
  await peer?.stop();
});

describe('xiaoan device …', () => {
  it('profiles: one JSON line per profile', async () => {
    const r = runs.profiles!;
    expect(r.status).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.length).toBeGreaterThanOrEqual(8);
    expect(rows).toContainEqual({ id: 'smoke-photoelectric-generic', protocol: 'modbus', category: 'fire', description: { zh: '点型光电感烟火灾探测器', en: 'Photoelectric point smoke detector' } });
  });

  it('read: a camera describes itself; wrong credentials are one line and exit 1', async () => {
    const ok = runs.camOk!;
    expect(ok.status).toBe(0);
    const info = JSON.parse(oneLine(ok.stdout));
    expect(info).toMatchObject({ kind: 'camera', model: 'SIM-IPC-1', device: expect.stringContaining(':***@') });
    const bad = runs.camBad!;
    expect(bad.status).toBe(1);
    expect(oneLine(bad.stderr)).toMatch(/^xiaoan device read: 用户名或密码错误 wrong credentials for camera 127\.0\.0\.1:\d+$/);
    expect(bad.stderr).not.toContain('nope');
  });

  it('read: bad input is one line saying what to do', async () => {
    const { r1, r2, r3, r4 } = runs;
    for (const r of [r1, r2, r3, r4]) expect(r!.status).toBe(1);
    expect(oneLine(r1!.stderr)).toMatch(/unknown device profile "no-such-model"; known: .*smoke-photoelectric-generic/);
    expect(oneLine(r2!.stderr)).toMatch(/does not fit profile smoke-photoelectric-generic \(modbus\); use modbus-tcp:/);
    expect(oneLine(r3!.stderr)).toMatch(/unit must be 0–255/);
    expect(oneLine(r4!.stderr)).toMatch(/MQTT device/);
  });

  it('discover: ONVIF cameras by unicast WS-Discovery, Modbus units on a port', async () => {
    const { onvif, units, none } = runs as Record<string, Run>;
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
