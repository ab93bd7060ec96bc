// SIGKILL the gateway in the middle of a burst and restart it: every reading the gateway
// accepted lands exactly once (deduplicated by (gateway, seq) as ingest does), and seq never
// goes backwards.
import { rmSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startMosquitto, type MosquittoHandle } from '../edge/index.ts';
import {
  connectDevice, counterValues, gatewaySetup, httpJson, publishCounter, startGatewayProcess, startVerifier, until,
  type GatewayProcess, type Verifier,
} from './edge-support.ts';

let broker: MosquittoHandle | undefined;
let verifier: Verifier | undefined;
const procs: GatewayProcess[] = [];
const dirs: string[] = [];

afterAll(async () => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  await verifier?.close();
  await broker?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('edge gateway killed mid-burst', () => {
  it('delivers every accepted reading exactly once after a restart, with seq still increasing', async () => {
    const bdir = mkdtempSync(join(tmpdir(), 'xiaoan-mosq-'));
    dirs.push(bdir);
    broker = await startMosquitto(bdir);
    const setup = await gatewaySetup(broker.url);
    dirs.push(setup.dir);
    verifier = await startVerifier(broker.url, setup.gatewayId);

    // run 1: a burst, killed with SIGKILL once a few thousand readings were accepted
    const t0 = Date.now(); const step = (m: string) => process.env.XIAOAN_TEST_TRACE && console.log(`${Date.now() - t0} ms: ${m}`);
    let gw = await startGatewayProcess(setup);
    step('gateway 1 up');
    procs.push(gw);
    let dev = await connectDevice(setup);
    const acked1 = new Set<number>();
    let killedAt = -1;
    const burst = publishCounter(dev, 0, 50_000, acked1, { window: 64, stop: () => killedAt >= 0 });
    await until(() => acked1.size >= 3000, '3000 readings accepted by the gateway');
    step(`killing at ${acked1.size}`);
    gw.child.kill('SIGKILL');
    await gw.exited;
    killedAt = acked1.size;
    // the broker published the gateway's last will: the centre knows at once that the school went dark
    await until(() => verifier!.statuses.at(-1)?.state === 'offline', 'last will (offline)', 10_000);
    // the device's connection died with the gateway: fail its pending publishes
    dev.end(true);
    await burst;
    const acceptedBeforeKill = [...acked1];
    expect(acceptedBeforeKill.length).toBeGreaterThanOrEqual(3000);
    const seenBeforeRestart = counterValues(verifier).length;

    // run 2: same data directory; the buffer replays, and a second burst follows
    step('restarting');
    gw = await startGatewayProcess(setup);
    procs.push(gw);
    step('gateway 2 up');
    dev = await connectDevice(setup);
    const acked2 = new Set<number>();
    await publishCounter(dev, 1_000_000, 1_002_000, acked2, { window: 32 });
    expect(acked2.size).toBe(2000);
    step('burst 2 accepted');
    await until(() => verifier!.statuses.at(-1)?.state === 'online', 'birth after restart', 30_000);
    const everything = [...acceptedBeforeKill, ...acked2];
    await until(() => {
      const got = new Set(counterValues(verifier!));
      return everything.every((n) => got.has(n));
    }, 'every accepted reading at the subscriber', 40_000).catch(async (e) => {
      const got = new Set(counterValues(verifier!));
      const missing = everything.filter((n) => !got.has(n));
      console.log('missing', missing.length, missing.slice(0, 10), 'got', got.size, await httpJson(setup.httpPort, '/healthz'), gw.stderr().slice(-3000));
      throw e;
    });
    await until(async () => ((await httpJson(setup.httpPort, '/healthz')) as { buffer: { depth: number } }).buffer.depth === 0, 'buffer drained');

    const values = counterValues(verifier);
    // exactly once: each value under exactly one seq (a value under two seqs would be stored twice)
    expect(values.length).toBe(new Set(values).size);
    expect(verifier.conflicts).toEqual([]);
    // nothing the gateway accepted is missing
    const got = new Set(values);
    expect(everything.filter((n) => !got.has(n))).toEqual([]);
    // run 1's readings form one gap-free prefix of the burst (the kill only cut the tail)
    const run1 = values.filter((n) => n < 1_000_000).sort((a, b) => a - b);
    expect(run1[run1.length - 1]).toBe(run1.length - 1);
    // seq never goes backwards: every reading of run 2 has a higher seq than any of run 1
    const seqOf = new Map([...verifier.readings.values()].filter((r) => r.metric === 'counter').map((r) => [r.value, r.seq]));
    const maxSeq1 = Math.max(...run1.map((n) => seqOf.get(n)!));
    const minSeq2 = Math.min(...[...acked2].map((n) => seqOf.get(n)!));
    expect(minSeq2).toBeGreaterThan(maxSeq1);
    // and the restart did replay records that had been buffered but not acknowledged
    expect(run1.length).toBeGreaterThanOrEqual(seenBeforeRestart);
    console.log(`edge-sigkill: accepted before kill ${acceptedBeforeKill.length}, buffered ${run1.length}, seen before restart ${seenBeforeRestart}, duplicates at the subscriber ${verifier.duplicates}`);
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
  });
});
