// The InfluxDB sink against a real influxd 1.x of our own (free port, temp dir).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InfluxDB } from 'influx';
import { createInfluxSink, parseInfluxUrl, type InfluxSink } from './sink.ts';
import { startInfluxd, type Peer } from '../../test/support/peers.ts';
import type { StoredBatch } from '../types.ts';

const batch = (from: number, n: number): StoredBatch => ({
  gateway: { id: 'gw-a', orgPath: '37/3701/370102/3737000001', county: '370102' },
  readings: Array.from({ length: n }, (_, i) => ({
    seq: from + i, device: 'temp-1', metric: 'temperature', ts: Date.now() - 10_000 + from + i, value: 20 + i / 10, quality: 'good' as const,
  })),
  events: from === 0 ? [{ seq: 1_000_000, device: 'smoke-1', type: 'smoke.alarm', ts: Date.now(), priority: 'alarm', drill: true, data: { density: 0.3 } }] : [],
});

async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 20_000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('InfluxDB sink', () => {
  let influxd: Peer;
  let sink: InfluxSink | undefined;
  beforeAll(async () => { influxd = await startInfluxd(); });
  afterAll(async () => {
    await sink?.close();
    await influxd?.close();
  });

  const count = async (db: string, m: string) => {
    const c = new InfluxDB({ host: '127.0.0.1', port: influxd.port, database: db });
    const r = await c.query<{ count: number }>(`select count(*) from ${m}`).catch(() => []);
    const row = r[0] as unknown as Record<string, number> | undefined;
    return row ? Number(Object.entries(row).find(([k]) => k.startsWith('count'))?.[1] ?? 0) : 0;
  };

  it('rejects a URL without a database, saying what to write', () => {
    expect(() => parseInfluxUrl('http://127.0.0.1:8086')).toThrow(/HOST:PORT\/DATABASE/);
    expect(parseInfluxUrl('http://h:9999/xiaoan')).toEqual({ protocol: 'http', host: 'h', port: 9999, database: 'xiaoan' });
  });

  it('writes readings and events as points', async () => {
    sink = await createInfluxSink({ url: `${influxd.url}/xiaoan_a`, flushMs: 20, batchSize: 500 });
    await sink.listener.onStored(batch(0, 1200));
    await until('written', () => sink!.stats().written === 1201);
    expect(await count('xiaoan_a', 'readings')).toBe(1200);
    expect(await count('xiaoan_a', 'events')).toBe(1);
    expect(sink.stats()).toMatchObject({ state: 'ok', dropped: 0, buffered: 0 });
    await sink.close();
  });

  it('never blocks while InfluxDB is down, bounds its buffer, and catches up when it is back', async () => {
    await influxd.stop();
    sink = await createInfluxSink({ url: `${influxd.url}/xiaoan_b`, flushMs: 10, batchSize: 1000, bufferMax: 3000, retry: { minMs: 20, maxMs: 100 } });
    // onStored resolves with InfluxDB down: the PostgreSQL path is never held
    for (let i = 0; i < 5; i++) await sink.listener.onStored(batch(1 + i * 1000, 1000));
    await until('retrying', () => sink!.stats().state === 'retrying');
    expect(sink.stats().buffered).toBe(3000);
    expect(sink.stats().dropped).toBe(2000);
    await influxd.start();
    await until('drained', () => sink!.stats().buffered === 0, 30_000);
    expect(sink.stats()).toMatchObject({ state: 'ok', written: 3000 });
    expect(await count('xiaoan_b', 'readings')).toBe(3000);
  });
});
