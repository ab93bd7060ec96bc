// No acknowledgement before custody (docs/delivery.md, step 1): a device that publishes QoS 1 and
// QoS 2 messages to the gateway's device broker from the moment the gateway process starts gets
// a PUBACK / PUBCOMP only for what the gateway has in its buffer — so every message it saw
// acknowledged reaches the centre. A payload its driver cannot read is acknowledged too, but
// never silently: it is quarantined and reported.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { startMosquitto } from '../edge/index.ts';
import { DEVICE_PASSWORD, counterValues, gatewaySetup, httpJson, metricValue, startGatewayProcess, startVerifier, until } from './edge-support.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('device broker acknowledges only what the gateway holds', () => {
  it('every QoS 1 and QoS 2 message acknowledged from the first second lands at the centre; an unreadable one is quarantined', async () => {
    const bdir = mkdtempSync(join(tmpdir(), 'xiaoan-mosq-'));
    const broker = await startMosquitto(bdir);
    cleanups.push(() => rmSync(bdir, { recursive: true, force: true }), () => broker.stop());
    const setup = await gatewaySetup(broker.url);
    cleanups.push(() => rmSync(setup.dir, { recursive: true, force: true }));
    const verifier = await startVerifier(broker.url, setup.gatewayId);
    cleanups.push(() => verifier.close());

    // the device is up first and keeps knocking (every 20 ms) while the gateway starts
    const dev = mqtt.connect(`mqtt://127.0.0.1:${setup.deviceBrokerPort}`, {
      clientId: 'burst-1-custody', username: 'burst-1', password: DEVICE_PASSWORD, clean: false, reconnectPeriod: 20, connectTimeout: 5000,
    });
    cleanups.push(() => void dev.end(true));
    let closes = 0;
    dev.on('close', () => closes++);
    const acked = new Map<number, 1 | 2>();
    const total = 2000;
    let next = 0;
    const worker = async () => {
      while (next < total) {
        const n = next++;
        const qos = n % 2 === 0 ? 1 : 2;
        await dev.publishAsync('devices/burst-1/state', JSON.stringify({ n }), { qos });
        acked.set(n, qos);
      }
    };
    const burst = Promise.all(Array.from({ length: 16 }, worker));
    const gw = await startGatewayProcess(setup);
    cleanups.push(async () => {
      if (gw.child.exitCode === null) {
        gw.child.kill('SIGTERM');
        await gw.exited;
      }
    });
    await burst;
    expect(acked.size).toBe(total);
    expect([...acked.values()].filter((q) => q === 2)).toHaveLength(total / 2);

    // every acknowledged message is at the centre
    await until(() => acked.size > 0 && [...acked.keys()].every((n) => new Set(counterValues(verifier)).has(n)), 'every acknowledged value at the centre', 40_000).catch((e) => {
      const got = new Set(counterValues(verifier));
      console.log('missing', [...acked.keys()].filter((n) => !got.has(n)).slice(0, 20), 'closes', closes, gw.stderr().slice(-2000));
      throw e;
    });
    expect(verifier.conflicts).toEqual([]);

    // a payload the driver cannot read: acknowledged, set aside, reported
    await dev.publishAsync('devices/burst-1/state', '<<not json>>', { qos: 1 });
    await until(() => [...verifier.events.values()].some((e) => e.type === 'gateway.record_quarantined'), 'quarantine reported');
    const q = [...verifier.events.values()].find((e) => e.type === 'gateway.record_quarantined')!;
    expect(q).toMatchObject({ device: setup.gatewayId, priority: 'normal', data: { device: 'burst-1', reason: expect.stringMatching(/not JSON/) } });
    expect(JSON.stringify(q)).not.toContain('<<not json>>');
    const metrics = (await httpJson(setup.httpPort, '/metrics')) as string;
    expect(metricValue(metrics, 'xiaoan_edge_records_quarantined_total')).toBe(1);
    await until(async () => ((await httpJson(setup.httpPort, '/healthz')) as { buffer: { depth: number } }).buffer.depth === 0, 'buffer drained on receipts');
  });
});
