// Security of the two aedes brokers Xiaoan runs, with real MQTT clients (MQTT.js) and raw sockets:
// a client id is bound to the login (contract/mqtt-identity.ts) and an oversized packet is refused
// before it is buffered (contract/mqtt-limits.ts). docs/security.md, "MQTT identity" and "Packet limits".
import { connect as tcpConnect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { silentLogger } from '../contract/index.ts';
import { startCentralBroker, type CentralBroker, type Store } from '../ingest/index.ts';
import { startDeviceBroker, type DeviceBroker } from '../device-drivers/index.ts';

const GATEWAYS: Record<string, { password: string; county: string }> = {
  'gw-3701020001': { password: 'gw-1-password', county: '370102' },
  'gw-3701020002': { password: 'gw-2-password', county: '370102' },
  'gw-3701020001-b': { password: 'gw-1b-password', county: '370102' },
};
/** The broker reads only verifyGateway and getGateway from its store. */
const store = {
  async getGateway(id: string) {
    return GATEWAYS[id] ? { id, county: GATEWAYS[id].county, orgPath: '37/3701/370102/school-1', name: id } : null;
  },
  async verifyGateway(id: string, password: string) {
    const g = GATEWAYS[id];
    return g && g.password === password ? { id, county: g.county, orgPath: '37/3701/370102/school-1' } : null;
  },
} as unknown as Store;

const DEVICE_PASSWORDS: Record<string, string> = { 'gate-1': 'gate-1-pw', 'gate-2': 'gate-2-pw', 'gate-1-b': 'gate-1-b-pw' };

function login(url: string, clientId: string, username: string, password: string): Promise<MqttClient> {
  return mqtt.connectAsync(url, { clientId, username, password, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000 });
}

/** Whether `c` lost its connection within `ms` (a takeover closes the older connection at once). */
function staysConnected(c: MqttClient, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => { c.off('close', onClose); resolve(true); }, ms);
    const onClose = () => { clearTimeout(t); resolve(false); };
    c.once('close', onClose);
  });
}

/**
 * Announce a CONNECT of `bytes` and stream its body in 64 KB chunks until the broker closes the
 * socket. Resolves with the bytes written and how long the broker took to close it.
 */
function floodConnect(port: number, bytes: number): Promise<{ written: number; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let written = 0;
    let closed = false;
    const s: Socket = tcpConnect(port, '127.0.0.1', () => {
      // fixed header: CONNECT (0x10) and a 4-byte Remaining Length [MQTT-2.2.3]
      const len = bytes - 5;
      s.write(Buffer.from([0x10, (len & 0x7f) | 0x80, ((len >> 7) & 0x7f) | 0x80, ((len >> 14) & 0x7f) | 0x80, (len >> 21) & 0x7f]));
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      const pump = () => {
        while (!closed && written < bytes) {
          written += chunk.length;
          if (!s.write(chunk)) return void s.once('drain', pump);
        }
      };
      pump();
    });
    s.on('error', () => {});
    s.on('close', () => { closed = true; resolve({ written, closedAfterMs: Date.now() - started }); });
    setTimeout(() => { if (!closed) { s.destroy(); reject(new Error('broker did not close an oversized CONNECT within 5 s')); } }, 5000);
  });
}

async function rssAfterGc(): Promise<number> {
  (globalThis as { gc?: () => void }).gc?.();
  await new Promise((r) => setImmediate(r));
  return process.memoryUsage().rss;
}

describe('central broker (ingest/broker.ts)', () => {
  let broker: CentralBroker;
  const open: MqttClient[] = [];
  beforeAll(async () => {
    broker = await startCentralBroker({
      port: 0, store, log: silentLogger,
      serviceAccounts: [
        { username: 'svc-ingest', password: 'ingest-password' },
        // the demo's ingest worker runs as xiaoan-demo-ingest-{events|readings|control}
        { username: 'ingest', password: 'demo-ingest-password', clientIdPrefixes: ['xiaoan-demo-ingest-'] },
      ],
    });
  });
  afterAll(async () => {
    for (const c of open) c.end(true);
    await broker.close();
  });

  it("a gateway's password cannot take the ingest lanes' client ids; the lanes stay connected", async () => {
    const lanes = await Promise.all(['control', 'events'].map((l) => login(broker.url, `xiaoan-demo-ingest-${l}`, 'ingest', 'demo-ingest-password')));
    open.push(...lanes);
    const watching = lanes.map((c) => staysConnected(c, 600));
    for (const id of ['xiaoan-demo-ingest-control', 'xiaoan-demo-ingest-events', 'xiaoan-ingest-3701-main-control']) {
      await expect(login(broker.url, id, 'gw-3701020001', 'gw-1-password')).rejects.toThrow(/Identifier rejected/i);
    }
    expect(await Promise.all(watching)).toEqual([true, true]);
  });

  it('a gateway connects only as its own id (or its id-suffix), and cannot replace another gateway', async () => {
    const gw2 = await login(broker.url, 'gw-3701020002', 'gw-3701020002', 'gw-2-password');
    const gw1b = await login(broker.url, 'gw-3701020001-b', 'gw-3701020001-b', 'gw-1b-password');
    open.push(gw2, gw1b);
    const watching = [staysConnected(gw2, 600), staysConnected(gw1b, 600)];
    await expect(login(broker.url, 'gw-3701020002', 'gw-3701020001', 'gw-1-password')).rejects.toThrow(/Identifier rejected/i);
    // gw-3701020001-b is another registered gateway's id, even though it starts with gw-3701020001-
    await expect(login(broker.url, 'gw-3701020001-b', 'gw-3701020001', 'gw-1-password')).rejects.toThrow(/Identifier rejected/i);
    await expect(login(broker.url, 'gw-3701020001-b-2', 'gw-3701020001', 'gw-1-password')).rejects.toThrow(/Identifier rejected/i);
    expect(await Promise.all(watching)).toEqual([true, true]);
    const own = await login(broker.url, 'gw-3701020001', 'gw-3701020001', 'gw-1-password');
    const second = await login(broker.url, 'gw-3701020001-node-red', 'gw-3701020001', 'gw-1-password');
    await Promise.all([own.endAsync(), second.endAsync()]);
  });

  it('a service account uses only ids under its own prefix; a wrong password is still a bad login', async () => {
    const svc = await login(broker.url, 'xiaoan-ingest-3701-main-events', 'svc-ingest', 'ingest-password');
    await svc.endAsync();
    await expect(login(broker.url, 'gw-3701020001', 'svc-ingest', 'ingest-password')).rejects.toThrow(/Identifier rejected/i);
    await expect(login(broker.url, 'xiaoan-demo-ingest-control', 'svc-ingest', 'ingest-password')).rejects.toThrow(/Identifier rejected/i);
    await expect(login(broker.url, 'xiaoan-ingest-3701-main-events', 'svc-ingest', 'wrong')).rejects.toThrow(/Bad username or password/i);
  });

  it('refuses a 16 MB CONNECT before buffering it, and keeps serving others', async () => {
    const before = await rssAfterGc();
    const r = await floodConnect(broker.port, 16 * 1024 * 1024);
    expect(r.closedAfterMs).toBeLessThan(2000);
    expect(await rssAfterGc() - before).toBeLessThan(8 * 1024 * 1024);
    const gw = await login(broker.url, 'gw-3701020001', 'gw-3701020001', 'gw-1-password');
    await gw.publishAsync('xiaoan/v1/37/3701/370102/gw-3701020001/status', JSON.stringify({ v: 1, gateway: 'gw-3701020001', state: 'online', ts: Date.now() }), { qos: 1 });
    await gw.endAsync();
  });

  it('refuses a packet over the limit after login too (the connection is closed)', async () => {
    const small = await startCentralBroker({ port: 0, store, serviceAccounts: [], limits: { afterAuthBytes: 64 * 1024 } });
    try {
      const gw = await login(small.url, 'gw-3701020001', 'gw-3701020001', 'gw-1-password');
      const closed = new Promise<void>((r) => gw.once('close', () => r()));
      gw.publish('xiaoan/v1/37/3701/370102/gw-3701020001/events', Buffer.alloc(128 * 1024, 0x20), { qos: 1 });
      await closed;
      gw.end(true);
    } finally {
      await small.close();
    }
  });
});

describe("gateway's device broker (device-drivers/mqtt/broker.ts)", () => {
  let broker: DeviceBroker;
  const open: MqttClient[] = [];
  beforeAll(async () => {
    broker = await startDeviceBroker({ port: 0, log: silentLogger, authenticate: (u, p) => (DEVICE_PASSWORDS[u] === p ? u : null), knownDevices: () => Object.keys(DEVICE_PASSWORDS) });
  });
  afterAll(async () => {
    for (const c of open) c.end(true);
    await broker.close();
  });

  it('a device cannot kick another device off', async () => {
    const gate1 = await login(broker.url, 'gate-1', 'gate-1', 'gate-1-pw');
    const gate1b = await login(broker.url, 'gate-1-b', 'gate-1-b', 'gate-1-b-pw');
    open.push(gate1, gate1b);
    const watching = [staysConnected(gate1, 600), staysConnected(gate1b, 600)];
    await expect(login(broker.url, 'gate-1', 'gate-2', 'gate-2-pw')).rejects.toThrow(/Identifier rejected/i);
    // gate-1 may use gate-1-{suffix}, but not gate-1-b: that is another device's own id
    await expect(login(broker.url, 'gate-1-b', 'gate-1', 'gate-1-pw')).rejects.toThrow(/Identifier rejected/i);
    expect(await Promise.all(watching)).toEqual([true, true]);
    expect(broker.connectedDevices().sort()).toEqual(['gate-1', 'gate-1-b']);
    const second = await login(broker.url, 'gate-1-sensor', 'gate-1', 'gate-1-pw');
    await second.endAsync();
  });

  it('refuses a 16 MB CONNECT before buffering it, and keeps serving others', async () => {
    const before = await rssAfterGc();
    const r = await floodConnect(broker.port, 16 * 1024 * 1024);
    expect(r.closedAfterMs).toBeLessThan(2000);
    expect(await rssAfterGc() - before).toBeLessThan(8 * 1024 * 1024);
    const gate2 = await login(broker.url, 'gate-2', 'gate-2', 'gate-2-pw');
    await gate2.publishAsync('devices/gate-2/state', '{"open":false}', { qos: 0 });
    await gate2.endAsync();
  });
});
