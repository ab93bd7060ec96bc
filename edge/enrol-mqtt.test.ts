// Enrolling an MQTT device with the real drivers and the gateway's own device broker: the live
// test lets the device log in with the credentials under test, and only enrolment keeps them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../contract/index.ts';
import { createGateway, freePort, parseEdgeConfig, type Gateway } from './index.ts';

const dirs: string[] = [];
const stops: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const s of stops.splice(0).reverse()) await s();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A gate that keeps trying to log in and, once in, reports its state every 200 ms. */
function gate(port: number, id: string, password: string): { connectedOnce: () => boolean; stop: () => void } {
  let client: MqttClient | null = null;
  let ok = false;
  let stopped = false;
  const attempt = () => {
    if (stopped) return;
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: `${id}-dev`, username: id, password, reconnectPeriod: 0, connectTimeout: 2000 });
    client = c;
    c.on('connect', () => {
      ok = true;
      const t = setInterval(() => c.publish(`devices/${id}/state`, JSON.stringify({ door: 'closed', locked: true }), { qos: 1 }), 200);
      c.once('close', () => clearInterval(t));
    });
    c.on('error', () => {});
    c.once('close', () => setTimeout(attempt, 200));
  };
  attempt();
  return { connectedOnce: () => ok, stop: () => { stopped = true; client?.end(true); } };
}

describe('enrolling an MQTT device', () => {
  it('tests it live on the device broker before saving, then it stays logged in', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xiaoan-enrol-'));
    dirs.push(dir);
    const port = await freePort();
    const cfg = parseEdgeConfig({
      gatewayId: 'gw-enrol', county: '370102', site: '37/3701/370102/3737000001',
      uplink: { url: 'mqtt://127.0.0.1:9', reconnectMs: 60_000 }, dataDir: dir, http: { port: 0 }, deviceBroker: { port, host: '127.0.0.1' },
    });
    const gw: Gateway = await createGateway(cfg, { log: silentLogger });
    stops.push(() => gw.stop());
    await gw.start();
    const dev = gate(port, 'gate-7', 'gate-7-password');
    stops.push(() => dev.stop());
    await new Promise((r) => setTimeout(r, 800));
    expect(dev.connectedOnce()).toBe(false); // not enrolled: refused

    const wrong = await gw.testDevice({ id: 'gate-7', profile: 'gate-controller-generic', url: 'mqtt://gate-7', password: 'another-password' }, { waitMs: 1500 });
    expect(wrong.ok).toBe(false);
    const r = await gw.enrol({ id: 'gate-7', profile: 'gate-controller-generic', url: 'mqtt://gate-7', password: 'gate-7-password', name: '北门' });
    expect(r.test).toMatchObject({ ok: true, observations: expect.arrayContaining([expect.objectContaining({ kind: 'reading', metric: 'door_open', value: 0 })]) });
    const end = Date.now() + 10_000;
    while (gw.listDevices()[0]?.state !== 'online' && Date.now() < end) await new Promise((res) => setTimeout(res, 100));
    expect(gw.listDevices()).toEqual([expect.objectContaining({ id: 'gate-7', state: 'online', hasPassword: true })]);
  });
});
