// Zero loss, end to end, counted from outside: devices count their own acknowledgements, and
// every acknowledged record must be in PostgreSQL exactly once after each fault. Gateway, broker
// (Mosquitto with persistence, passwords, ACL) and ingest are separate processes; the ingest runs
// on its default configuration (no client id), as the compose files run their replicas.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../contract/index.ts';
import { openStore, type Store } from '../ingest/index.ts';
import { Broker, COUNTY, Device, GatewayHome, IngestHome, SITE, countStored, gatewayPassword, registerGatewayByCli, sleep, totalAcked, until, type Count } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/databases.ts';

const RECEIPT_TIMEOUT_MS = 4000;
const GATEWAYS = ['gw-chaos-kill', 'gw-chaos-broker', 'gw-chaos-both', 'gw-chaos-ingest', 'gw-chaos-late'];

let tdb: TestDatabase;
let store: Store;
let broker: Broker;
let ingest: IngestHome;
const homes: GatewayHome[] = [];

beforeAll(async () => {
  tdb = await createTestDatabase('postgres');
  store = await openStore(tdb.url, { log: silentLogger });
  await store.seedOrgTree({ demo: true });
  broker = await Broker.create(GATEWAYS);
  ingest = new IngestHome(tdb.url, broker.url);
  await ingest.start();
}, 60_000);

afterAll(async () => {
  for (const h of homes) {
    await h.proc?.kill();
    h.close();
  }
  await ingest?.proc?.kill();
  ingest?.close();
  await broker?.close();
  await store?.close();
  await tdb?.drop();
}, 60_000);

async function gateway(id: string, opts: { register?: boolean } = {}): Promise<{ home: GatewayHome; devices: Device[] }> {
  const home = new GatewayHome(id, ['dev-q2', 'dev-q1']);
  homes.push(home);
  await home.write(broker.url, RECEIPT_TIMEOUT_MS);
  if (opts.register !== false) await store.registerGateway({ id, county: COUNTY, orgPath: SITE, password: gatewayPassword(id) });
  // about 165 records/s: two counters at QoS 2 and QoS 1, alarm presses on both
  const devices = [new Device(home, 'dev-q2', 2, 80, 2000), new Device(home, 'dev-q1', 1, 80, 3000, 10_000_000)];
  return { home, devices };
}

/** Stop the devices, wait until every acknowledged record is stored, then check nothing is doubled. */
async function settle(id: string, devices: Device[], ms = 90_000): Promise<Count> {
  for (const d of devices) await d.stop();
  const tallies = devices.map((d) => d.tally);
  let c = await countStored(tdb.db, id, tallies);
  await until(async () => {
    c = await countStored(tdb.db, id, tallies);
    return c.lost.length === 0 && c.lostAlarms.length === 0;
  }, `every acknowledged record of ${id} stored (lost now: ${c.lost.length} readings, ${c.lostAlarms.length} alarms)`, ms).catch(() => {});
  // redeliveries still on their way must not add rows
  await sleep(RECEIPT_TIMEOUT_MS + 1500);
  return countStored(tdb.db, id, tallies);
}

const report = (name: string, acked: number, c: Count) =>
  console.log(`chaos ${name}: acknowledged ${acked}, stored ${c.stored}, lost ${c.lost.length + c.lostAlarms.length} (alarms ${c.lostAlarms.length}), duplicated ${c.seqDuplicates + c.valueDuplicates}`);

function expectZeroLoss(c: Count): void {
  expect(c.lostAlarms).toEqual([]);
  expect(c.lost.length).toBe(0);
  expect(c.seqDuplicates).toBe(0);
  expect(c.valueDuplicates).toBe(0);
}

describe('zero loss with every tier a process of its own', () => {
  it('gateway SIGKILLed during start-up and mid-burst, three times', async () => {
    const { home, devices } = await gateway('gw-chaos-kill');
    await home.start();
    for (const d of devices) d.start();
    for (let i = 0; i < 3; i++) {
      await sleep(3000);
      await home.proc!.kill('SIGKILL');
      // killed again within its first second: devices are connecting while it opens its broker
      const p = await home.start({ waitReady: false });
      await sleep(400 + i * 150);
      await p.kill('SIGKILL');
      await home.start();
    }
    await sleep(3000);
    const acked = totalAcked(devices.map((d) => d.tally));
    const c = await settle('gw-chaos-kill', devices);
    report('gateway-sigkill', acked, c);
    expect(acked).toBeGreaterThan(100); // the devices did publish (a loaded machine acknowledges fewer)
    expectZeroLoss(c);
  }, 300_000);

  it('broker down while devices keep publishing, the gateway reconnecting before the ingest', async () => {
    const { home, devices } = await gateway('gw-chaos-broker');
    await home.start();
    for (const d of devices) d.start();
    await sleep(3000);
    const marks = devices.map((d) => d.nextValue());
    await broker.stop();
    await sleep(10_000); // devices go on publishing into the gateway's buffer; alarms among them
    const outageAlarms = devices.flatMap((d, i) => d.alarmsAfter(marks[i]!).map((n) => ({ device: d.id, n })));
    // the ingest is away when the broker comes back: Mosquitto does not restore its $share
    // subscription, accepts the gateway's backlog and drops it
    await ingest.proc!.kill('SIGTERM');
    await broker.start();
    await sleep(3000);
    const backlog = devices.map((d) => [...d.tally.acked]);
    await ingest.start();
    // the outage's alarms are stored no later than the backlog of readings around them. Observed
    // by polling; on a loaded machine the two may not both be seen within the window, and then only
    // the zero-loss count below decides (issue 11's note: this check was flaky beside other suites).
    let alarmsAt = 0;
    let backlogAt = 0;
    await until(async () => {
      const now = Date.now();
      if (!alarmsAt) {
        const got = await tdb.db.query<{ n: number }>("select count(*)::int as n from events where gateway_id = $1 and type = 'button.pressed' and (data->>'n')::int = any($2::int[])", ['gw-chaos-broker', outageAlarms.map((a) => a.n)]);
        if (got.rows[0]!.n === outageAlarms.length) alarmsAt = now;
      }
      if (!backlogAt) {
        const got = await tdb.db.query<{ n: number }>("select count(*)::int as n from readings where gateway_id = $1 and metric = 'counter' and value = any($2::float8[])", ['gw-chaos-broker', backlog.flat()]);
        if (got.rows[0]!.n >= backlog.flat().length) backlogAt = now;
      }
      return alarmsAt > 0 && backlogAt > 0;
    }, 'outage alarms and backlog stored', 90_000).catch((e) => console.log(`chaos broker-restart: ordering not observed: ${(e as Error).message}`));
    if (alarmsAt && backlogAt) expect(alarmsAt).toBeLessThanOrEqual(backlogAt);
    const acked = totalAcked(devices.map((d) => d.tally));
    const c = await settle('gw-chaos-broker', devices);
    report('broker-restart', acked, c);
    expect(outageAlarms.length).toBeGreaterThanOrEqual(4);
    expectZeroLoss(c);
  }, 300_000);

  it('gateway and ingest SIGKILLed together, twice', async () => {
    const { home, devices } = await gateway('gw-chaos-both');
    await home.start();
    for (const d of devices) d.start();
    for (let i = 0; i < 2; i++) {
      await sleep(4000);
      await Promise.all([home.proc!.kill('SIGKILL'), ingest.proc!.kill('SIGKILL')]);
      await sleep(500);
      await ingest.start();
      await home.start();
    }
    await sleep(3000);
    const acked = totalAcked(devices.map((d) => d.tally));
    const c = await settle('gw-chaos-both', devices);
    report('gateway+ingest-sigkill', acked, c);
    expectZeroLoss(c);
  }, 300_000);

  it('ingest SIGKILLed twice on its default configuration', async () => {
    const { home, devices } = await gateway('gw-chaos-ingest');
    await home.start();
    for (const d of devices) d.start();
    for (let i = 0; i < 2; i++) {
      await sleep(4000);
      await ingest.proc!.kill('SIGKILL');
      await sleep(2000);
      await ingest.start();
    }
    await sleep(3000);
    const acked = totalAcked(devices.map((d) => d.tally));
    const c = await settle('gw-chaos-ingest', devices);
    report('ingest-sigkill', acked, c);
    expectZeroLoss(c);
  }, 300_000);

  it('a gateway registered centrally after it started sending', async () => {
    const { home, devices } = await gateway('gw-chaos-late', { register: false });
    // the broker knows it (its password is there), the centre does not yet
    await home.start();
    for (const d of devices) d.start();
    await sleep(8000);
    const dead = await tdb.db.query<{ n: number }>('select count(*)::int as n from dead_letters where gateway_id = $1', ['gw-chaos-late']);
    const added = await registerGatewayByCli(tdb.url, 'gw-chaos-late');
    expect(added.code, added.output).toBe(0);
    await sleep(3000);
    const acked = totalAcked(devices.map((d) => d.tally));
    const c = await settle('gw-chaos-late', devices);
    report('late-registration', acked, c);
    expect(dead.rows[0]!.n).toBe(0);
    expectZeroLoss(c);
  }, 300_000);
});
