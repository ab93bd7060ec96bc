// The uplink over TLS with a client certificate, against a real Mosquitto that requires one.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTopic, parsePayload, readingBatchSchema, silentLogger } from '../contract/index.ts';
import { createGateway, parseEdgeConfig, type Gateway } from './index.ts';
import { createManualClock, freePort, scriptedKit, startMosquitto, startReceiptResponder, type MosquittoHandle } from './testing.ts';

const dir = mkdtempSync(join(tmpdir(), 'xiaoan-tls-'));
let broker: MosquittoHandle;
let tlsPort: number;
const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

function issue(name: string, cn: string, san?: string) {
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
  if (san) writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', ...(san ? ['-extfile', `${name}.ext`] : []));
}

beforeAll(async () => {
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=xiaoan-test-ca', '-days', '1');
  issue('server', '127.0.0.1', 'IP:127.0.0.1');
  issue('client', 'gw-tls');
  chmodSync(dir, 0o755);
  for (const f of readdirSync(dir)) chmodSync(join(dir, f), 0o644); // mosquitto drops to its own user
  tlsPort = await freePort();
  broker = await startMosquitto(join(dir, 'broker'), {
    extraConfig: [`listener ${tlsPort} 127.0.0.1`, `cafile ${join(dir, 'ca.crt')}`, `certfile ${join(dir, 'server.crt')}`, `keyfile ${join(dir, 'server.key')}`, 'require_certificate true', 'use_identity_as_username true'],
  });
});
afterAll(async () => {
  await broker?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function tlsGateway(tls: Record<string, unknown>) {
  const clock = createManualClock();
  const cfg = parseEdgeConfig({
    gatewayId: 'gw-tls', county: '370102', site: '37/3701/370102/3737000001',
    uplink: { url: `mqtts://127.0.0.1:${tlsPort}`, tls, reconnectMs: 500 },
    dataDir: join(dir, `data-${Math.random().toString(16).slice(2)}`), http: { port: 0 }, deviceBroker: { port: 0 },
  });
  const gw = await createGateway(cfg, { clock, log: silentLogger, drivers: scriptedKit([], {}, clock) });
  await gw.start();
  return { gw, clock };
}

describe('uplink over TLS', () => {
  it('connects with a client certificate and delivers readings', async () => {
    const sub = await mqtt.connectAsync(broker.url, { clientId: 'tls-sub' });
    const got: number[] = [];
    sub.on('message', (_t, p) => {
      const r = parsePayload(readingBatchSchema, p);
      if (r.ok) got.push(...r.value.readings.map((x) => x.value));
    });
    await sub.subscribeAsync(buildTopic({ county: '370102', gatewayId: 'gw-tls', channel: 'readings' }), { qos: 1 });
    // the stand-in centre receipts over the plain listener; the receipt reaches the gateway over TLS
    const centre = await startReceiptResponder(broker.url);
    const { gw, clock } = await tlsGateway({ ca: join(dir, 'ca.crt'), cert: join(dir, 'client.crt'), key: join(dir, 'client.key') });
    let gw2: Gateway | undefined;
    try {
      gw.inject([{ kind: 'reading', device: 'temp-1', metric: 'temperature', ts: clock.now(), value: 21.5, quality: 'good' }]);
      const end = Date.now() + 15_000;
      while (got.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(got).toEqual([21.5]);
      expect(gw.status().uplink?.state).toBe('connected');
      while (gw.status().buffer.depth > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(gw.status().buffer.depth).toBe(0);
      // without a client certificate the broker refuses the gateway, and its records stay buffered
      ({ gw: gw2 } = await tlsGateway({ ca: join(dir, 'ca.crt') }));
      gw2.inject([{ kind: 'reading', device: 'temp-1', metric: 'temperature', ts: clock.now(), value: 1, quality: 'good' }]);
      await new Promise((r) => setTimeout(r, 1500));
      expect(gw2.status().uplink?.state).not.toBe('connected');
      expect(gw2.status().buffer.depth).toBe(1);
    } finally {
      await gw.stop();
      await gw2?.stop();
      await sub.endAsync();
      await centre.close();
    }
  });
});
