// The uplink broker (a real Mosquitto process) goes away while the school keeps producing:
// nothing is lost, order is kept, alarms raised during the outage arrive first after reconnect.
// And with a small buffer cap: the oldest routine readings are dropped, never events or alarms,
// and every drop is counted and reported.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startMosquitto, type MosquittoHandle } from '../edge/index.ts';
import {
  connectDevice, counterValues, gatewaySetup, httpJson, metricValue, publishCounter, startGatewayProcess, startVerifier, until,
  type GatewayProcess, type Verifier,
} from './edge-support.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setupAll(over: Parameters<typeof gatewaySetup>[1] = {}) {
  const bdir = mkdtempSync(join(tmpdir(), 'xiaoan-mosq-'));
  const broker: MosquittoHandle = await startMosquitto(bdir);
  cleanups.push(() => rmSync(bdir, { recursive: true, force: true }), () => broker.stop());
  const setup = await gatewaySetup(broker.url, over);
  cleanups.push(() => rmSync(setup.dir, { recursive: true, force: true }));
  const verifier: Verifier = await startVerifier(broker.url, setup.gatewayId);
  cleanups.push(() => verifier.close());
  const gw: GatewayProcess = await startGatewayProcess(setup);
  cleanups.push(async () => {
    if (gw.child.exitCode === null) {
      gw.child.kill('SIGTERM');
      await gw.exited;
    }
  });
  const dev = await connectDevice(setup);
  cleanups.push(() => void dev.end(true));
  return { broker, setup, verifier, gw, dev };
}

describe('edge gateway during an uplink outage', () => {
  it('keeps everything, in order, and sends alarms raised during the outage first', async () => {
    const { broker, setup, verifier, dev } = await setupAll({ buffer: { replayPerSecond: 5000 } });
    const acked = new Set<number>();
    await publishCounter(dev, 0, 500, acked, { window: 16 });
    await until(() => counterValues(verifier).length === 500, 'readings before the outage');

    await broker.stop();
    await until(async () => ((await httpJson(setup.httpPort, '/healthz')) as { uplink: string }).uplink !== 'connected', 'gateway sees the outage');
    await publishCounter(dev, 500, 5500, acked, { window: 32 });
    await dev.publishAsync('devices/burst-1/alarm', JSON.stringify({ n: 1 }), { qos: 2 });
    await dev.publishAsync('devices/burst-1/note', JSON.stringify({ n: 2 }), { qos: 2 });
    await publishCounter(dev, 5500, 6000, acked, { window: 16 });
    await dev.publishAsync('devices/burst-1/alarm', JSON.stringify({ n: 3 }), { qos: 2 });
    const during = (await httpJson(setup.httpPort, '/healthz')) as { status: string; buffer: { depth: number; oldestAgeMs: number } };
    expect(during.status).toBe('degraded');
    expect(during.buffer.depth).toBeGreaterThanOrEqual(5503);
    const metrics = (await httpJson(setup.httpPort, '/metrics')) as string;
    expect(metricValue(metrics, 'xiaoan_edge_uplink_up')).toBe(0);
    expect(metricValue(metrics, 'xiaoan_edge_buffer_alarms')).toBe(2);

    const orderBefore = verifier.order.length;
    await broker.start();
    await until(() => counterValues(verifier).length === 6000 && verifier.events.size >= 3, 'the backlog after reconnect', 40_000);

    // nothing lost
    expect(acked.size).toBe(6000);
    expect(new Set(counterValues(verifier)).size).toBe(6000);
    expect(verifier.conflicts).toEqual([]);
    // order kept: readings arrive in seq order, and seq order is the order the device sent them
    const readingSeqs = verifier.order.filter((o) => o.startsWith('r:')).map((o) => Number(o.slice(2)));
    expect(readingSeqs).toEqual([...readingSeqs].sort((a, b) => a - b));
    const byValue = [...verifier.readings.values()].sort((a, b) => a.seq - b.seq).map((r) => r.value);
    expect(byValue.slice(0, 500)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    // the alarms raised during the outage came before any of the backlog
    const after = verifier.order.slice(orderBefore);
    const alarmSeqs = [...verifier.events.values()].filter((e) => e.priority === 'alarm').map((e) => `e:${e.seq}`);
    expect(alarmSeqs).toHaveLength(2);
    expect(after.slice(0, 2).sort()).toEqual([...alarmSeqs].sort());
    // the routine event kept its place: after the readings sent before it
    const note = [...verifier.events.values()].find((e) => e.type === 'device.note')!;
    expect(note.priority).toBe('normal');
    await until(async () => ((await httpJson(setup.httpPort, '/healthz')) as { buffer: { depth: number } }).buffer.depth === 0, 'buffer drained');
  });

  it('past the buffer cap drops the oldest routine readings only, and reports every drop', async () => {
    const { broker, setup, verifier, dev } = await setupAll({ buffer: { maxRecords: 1000 } });
    await until(() => verifier.statuses.some((s) => s.state === 'online'), 'birth');
    await new Promise((r) => setTimeout(r, 1500)); // Mosquitto's autosave has the verifier's session
    await broker.stop();
    await until(async () => ((await httpJson(setup.httpPort, '/healthz')) as { uplink: string }).uplink !== 'connected', 'gateway sees the outage');
    const acked = new Set<number>();
    await dev.publishAsync('devices/burst-1/alarm', JSON.stringify({ n: 1 }), { qos: 2 });
    await dev.publishAsync('devices/burst-1/note', JSON.stringify({ n: 2 }), { qos: 2 });
    await publishCounter(dev, 0, 3000, acked, { window: 32 });
    await dev.publishAsync('devices/burst-1/alarm', JSON.stringify({ n: 3 }), { qos: 2 });
    const metrics = (await httpJson(setup.httpPort, '/metrics')) as string;
    const dropped = metricValue(metrics, 'xiaoan_edge_buffer_dropped_total');
    expect(dropped).toBeGreaterThan(1900);
    expect(metricValue(metrics, 'xiaoan_edge_buffer_depth')).toBeLessThanOrEqual(1000);

    await broker.start();
    await until(async () => ((await httpJson(setup.httpPort, '/healthz')) as { buffer: { depth: number } }).buffer.depth === 0, 'buffer drained', 40_000);
    await until(() => verifier.events.size >= 4, 'events', 10_000);
    await new Promise((r) => setTimeout(r, 300));

    // never an alarm or an event dropped
    const events = [...verifier.events.values()];
    expect(events.filter((e) => e.type === 'button.pressed')).toHaveLength(2);
    expect(events.filter((e) => e.type === 'device.note')).toHaveLength(1);
    // the readings kept are the newest ones, without a hole
    const values = counterValues(verifier).sort((a, b) => a - b);
    expect(values[values.length - 1]).toBe(2999);
    expect(values).toEqual(Array.from({ length: values.length }, (_, i) => 3000 - values.length + i));
    // every drop counted and reported: readings missing = the counter = the sum the drop events carry
    expect(3000 - values.length).toBe(dropped);
    const reports = events.filter((e) => e.type === 'gateway.buffer_dropped');
    expect(reports.length).toBeGreaterThanOrEqual(1);
    expect(reports.reduce((s, e) => s + Number(e.data.dropped), 0)).toBe(dropped);
    expect(reports.at(-1)!.data.total).toBe(dropped);
    // and the birth after reconnect says so too
    await until(() => verifier.statuses.some((s) => s.state === 'online' && (s.buffer?.dropped ?? 0) === dropped), 'birth with the drop count');
  });
});
