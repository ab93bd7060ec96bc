// docker/mosquitto/{mosquitto.conf,acl} in a real Mosquitto (ports and paths moved to a temp dir,
// TLS off): on the gateway listener a gateway's password cannot take a service lane's client id
// (the id becomes the username), the ACL keeps a gateway to its own topics, and an oversized
// CONNECT is refused without harming others.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { freePort } from '../edge/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'xiaoan-mosquitto-'));
let proc: ChildProcess | undefined;
let gwPort = 0;
let svcPort = 0;

beforeAll(async () => {
  gwPort = await freePort();
  svcPort = await freePort();
  const conf = readFileSync(new URL('../docker/mosquitto/mosquitto.conf', import.meta.url), 'utf8')
    .split('\n')
    .filter((l) => !/^(cafile|certfile|keyfile|tls_version|log_dest)\b/.test(l))
    .map((l) => l.replace(/^listener 8883$/, `listener ${gwPort} 127.0.0.1`).replace(/^listener 1884 0\.0\.0\.0$/, `listener ${svcPort} 127.0.0.1`)
      .replaceAll('/mosquitto/config/', `${dir}/`).replace('/mosquitto/data/', `${dir}/`))
    .join('\n');
  expect(conf).toContain(`listener ${gwPort} 127.0.0.1`);
  writeFileSync(join(dir, 'mosquitto.conf'), conf);
  writeFileSync(join(dir, 'acl'), readFileSync(new URL('../docker/mosquitto/acl', import.meta.url)));
  writeFileSync(join(dir, 'passwd'), '');
  for (const [u, p] of [['svc-ingest', 'ingest-pw'], ['gw-1', 'gw-1-pw'], ['gw-2', 'gw-2-pw']]) {
    const r = spawnSync('mosquitto_passwd', ['-b', join(dir, 'passwd'), u!, p!], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
  }
  // as root Mosquitto drops to its own user, which must read the files
  chmodSync(dir, 0o777);
  for (const f of ['passwd', 'acl', 'mosquitto.conf']) chmodSync(join(dir, f), 0o644);
  proc = spawn('mosquitto', ['-c', join(dir, 'mosquitto.conf')], { stdio: 'ignore' });
  const end = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => { const s = tcpConnect(gwPort, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); });
    if (ok) break;
    if (Date.now() > end) throw new Error('mosquitto did not start with docker/mosquitto/mosquitto.conf');
    await new Promise((r) => setTimeout(r, 100));
  }
});
afterAll(() => {
  proc?.kill();
  rmSync(dir, { recursive: true, force: true });
});

const login = (port: number, clientId: string, username: string, password: string): Promise<MqttClient> =>
  mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId, username, password, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000 });

describe('docker/mosquitto', () => {
  it("a gateway's password cannot take an ingest lane's client id, nor publish as another gateway", async () => {
    const lane = await login(svcPort, 'xiaoan-ingest-37-main-control', 'svc-ingest', 'ingest-pw');
    const got: string[] = [];
    lane.on('message', (t) => got.push(t));
    await lane.subscribeAsync('xiaoan/v1/#', { qos: 1 });
    let laneClosed = false;
    lane.on('close', () => (laneClosed = true));

    const gw = await login(gwPort, 'xiaoan-ingest-37-main-control', 'gw-1', 'gw-1-pw');
    await gw.publishAsync('xiaoan/v1/37/3701/370102/gw-2/readings', 'forged', { qos: 1 });
    await gw.publishAsync('xiaoan/v1/37/3701/370102/gw-1/readings', 'own', { qos: 1 });
    const end = Date.now() + 3000;
    while (!got.length && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(got).toEqual(['xiaoan/v1/37/3701/370102/gw-1/readings']);
    expect(laneClosed).toBe(false);
    await gw.endAsync();
    await lane.endAsync();
  });

  it('refuses a 16 MB CONNECT (max_packet_size) and keeps serving others', async () => {
    const closedAfter = await new Promise<number>((resolve) => {
      const started = Date.now();
      const s = tcpConnect(gwPort, '127.0.0.1', () => {
        const len = 16 * 1024 * 1024;
        s.write(Buffer.from([0x10, (len & 0x7f) | 0x80, ((len >> 7) & 0x7f) | 0x80, ((len >> 14) & 0x7f) | 0x80, (len >> 21) & 0x7f]));
        s.write(Buffer.alloc(256 * 1024, 0x41));
      });
      s.on('error', () => {});
      s.on('close', () => resolve(Date.now() - started));
    });
    expect(closedAfter).toBeLessThan(2000);
    const gw = await login(gwPort, 'gw-2', 'gw-2', 'gw-2-pw');
    await gw.endAsync();
  });
});
