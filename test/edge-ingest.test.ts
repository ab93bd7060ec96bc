// The SIGKILL fault against the real ingest path: gateway process → central broker (aedes, the
// gateway logs in with its registered password) → ingest worker → PGlite. Every reading the
// gateway accepted is in the database exactly once after a kill and a restart.
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../contract/index.ts';
import { createIngestWorker, openStore, startCentralBroker, type CentralBroker, type IngestWorker, type Store } from '../ingest/index.ts';
import {
  SITE, COUNTY, connectDevice, gatewaySetup, publishCounter, startGatewayProcess, until, type GatewayProcess,
} from './edge-support.ts';

let store: Store | undefined;
let broker: CentralBroker | undefined;
let worker: IngestWorker | undefined;
const procs: GatewayProcess[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  await worker?.stop();
  await broker?.close();
  await store?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('edge gateway killed mid-burst, into the database', () => {
  it('stores every accepted reading exactly once', async () => {
    store = await openStore('pglite:memory', { log: silentLogger });
    await store.seedOrgTree({ demo: true });
    broker = await startCentralBroker({ port: 0, host: '127.0.0.1', store, serviceAccounts: [{ username: 'ingest', password: 'ingest-password' }], log: silentLogger });
    worker = await createIngestWorker({ store, brokerUrl: broker.url, username: 'ingest', password: 'ingest-password', region: '37', listeners: [], log: silentLogger, clientId: 'xiaoan-ingest-edge-test' });
    await worker.start();
    const setup = await gatewaySetup(broker.url);
    dirs.push(setup.dir);
    await store.registerGateway({ id: setup.gatewayId, county: COUNTY, orgPath: SITE, password: 'gw-password' });
    const db = store.db;
    const counts = async () =>
      (await db.query<{ n: number; seqs: number; vals: number }>(
        'select count(*)::int as n, count(distinct seq)::int as seqs, count(distinct value)::int as vals from readings where gateway_id = $1 and metric = $2',
        [setup.gatewayId, 'counter'],
      )).rows[0]!;

    let gw = await startGatewayProcess(setup);
    procs.push(gw);
    let dev = await connectDevice(setup);
    const acked = new Set<number>();
    let killed = false;
    const burst = publishCounter(dev, 0, 50_000, acked, { window: 64, stop: () => killed });
    await until(() => acked.size >= 1000, '1000 readings accepted');
    gw.child.kill('SIGKILL');
    await gw.exited;
    killed = true;
    dev.end(true);
    await burst;
    const acceptedBeforeKill = acked.size;

    gw = await startGatewayProcess(setup);
    procs.push(gw);
    dev = await connectDevice(setup);
    await publishCounter(dev, 1_000_000, 1_000_300, acked, { window: 32 });
    dev.end(true);
    await until(async () => (await counts()).vals >= acked.size, 'every accepted reading in the database', 45_000);
    // let any redelivery arrive, then count again
    await new Promise((r) => setTimeout(r, 1000));
    const c = await counts();
    expect(c.n).toBe(c.seqs); // one row per (gateway, seq)
    expect(c.n).toBe(c.vals); // and one per reading: nothing stored twice under two seqs
    const stored = new Set((await db.query<{ value: number }>('select value from readings where gateway_id = $1 and metric = $2', [setup.gatewayId, 'counter'])).rows.map((r) => r.value));
    expect([...acked].filter((v) => !stored.has(v))).toEqual([]);
    expect(acceptedBeforeKill).toBeGreaterThanOrEqual(1000);
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
  });
});
