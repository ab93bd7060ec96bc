// The Node-RED nodes (rules/node-red) in the Node-RED runtime (node-red-node-test-helper), against
// the real tiers: the central broker, an ingest worker with the alerting, and the dashboards API.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import mqtt from 'mqtt';
import { buildTopic, silentLogger } from '../contract/index.ts';
import { openStore, startCentralBroker, createIngestWorker, type Store, type CentralBroker, type IngestWorker } from '../ingest/index.ts';
import { createAlerting, loadLibrary, type Alerting } from '../ingest/alerts/index.ts';
import { createDashboardServer, seedUser } from '../dashboards/index.ts';
import { createTestDatabase, type TestDatabase } from './support/databases.ts';

const require = createRequire(import.meta.url);
const helper = require('node-red-node-test-helper');
const xiaoanNodes = require('../rules/node-red/xiaoan.js');
helper.init(require.resolve('node-red'));

const SCHOOL = '37/3701/370102/3737000001';

type Msg = { topic?: string; payload: any };
function collect(node: { on(ev: string, f: (m: Msg) => void): void }) {
  const got: Msg[] = [];
  node.on('input', (m: Msg) => got.push(m));
  return got;
}
async function until<T>(what: string, fn: () => T | undefined | null | false, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('node-red-contrib-xiaoan', () => {
  let tdb: TestDatabase;
  let store: Store;
  let broker: CentralBroker;
  let worker: IngestWorker;
  let alerting: Alerting;
  let server: { url: string; close(): Promise<void> };

  beforeAll(async () => {
    tdb = await createTestDatabase('pglite');
    store = await openStore(tdb.db);
    await store.seedOrgTree({ demo: true });
    await store.registerGateway({ id: 'gw-3737000001', county: '370102', orgPath: SCHOOL, name: 'demo', password: 'gw-password' });
    await store.registerGateway({ id: 'nr-3737000001', county: '370102', orgPath: SCHOOL, name: 'node-red', password: 'nr-password' });
    await seedUser(tdb.db, { username: 'desk', password: 'desk-password', role: 'desk', orgPath: SCHOOL, displayName: '值班' });
    broker = await startCentralBroker({ port: 0, store, serviceAccounts: [{ username: 'ingest', password: 'ingest-password' }, { username: 'flows', password: 'flows-password', clientIdPrefixes: ['node-red-'] }] });
    alerting = await createAlerting({ db: tdb.db, rules: await loadLibrary(), tickMs: 0 });
    worker = await createIngestWorker({ store, brokerUrl: broker.url, username: 'ingest', password: 'ingest-password', region: '37', listeners: [alerting.listener], log: silentLogger });
    await worker.start();
    server = await createDashboardServer({ store, alerting, port: 0, host: '127.0.0.1', log: silentLogger } as never);
    await new Promise<void>((resolve) => helper.startServer(resolve));
  });
  afterAll(async () => {
    await helper.unload();
    await new Promise<void>((resolve) => helper.stopServer(resolve));
    await server?.close();
    await worker?.stop();
    await alerting?.stop();
    await broker?.close();
    await store?.close();
    await tdb?.drop();
  });

  it('readings and alerts in; raise and acknowledge out', async () => {
    const flow = [
      { id: 'srv', type: 'xiaoan-server', apiUrl: server.url, brokerUrl: broker.url },
      { id: 'readings', type: 'xiaoan-readings', server: 'srv', region: '370102', metric: '', wires: [['outReadings'], ['outEvents']] },
      { id: 'alerts', type: 'xiaoan-alerts', server: 'srv', category: '', wires: [['outAlerts']] },
      { id: 'raise', type: 'xiaoan-raise', server: 'srv', gateway: 'nr-3737000001', county: '370102', device: 'flow', category: 'hazard', wires: [['outRaised']] },
      { id: 'ackNode', type: 'xiaoan-ack', server: 'srv', action: 'ack', comment: 'seen by a flow', wires: [['outAck']] },
      { id: 'outReadings', type: 'helper' },
      { id: 'outEvents', type: 'helper' },
      { id: 'outAlerts', type: 'helper' },
      { id: 'outRaised', type: 'helper' },
      { id: 'outAck', type: 'helper' },
    ];
    const credentials = {
      srv: { username: 'desk', password: 'desk-password', mqttUsername: 'flows', mqttPassword: 'flows-password' },
      raise: { password: 'nr-password' },
    };
    await helper.load(xiaoanNodes, flow, credentials);
    const readings = collect(helper.getNode('outReadings'));
    const events = collect(helper.getNode('outEvents'));
    const alerts = collect(helper.getNode('outAlerts'));
    const raised = collect(helper.getNode('outRaised'));
    const acked = collect(helper.getNode('outAck'));
    await until('readings node connected', () => helper.getNode('readings').health === 'connected');
    await until('alerts node connected', () => helper.getNode('alerts').health === 'connected');
    await until('raise node connected', () => helper.getNode('raise').health === 'connected');

    // a gateway publishes a reading: the readings node passes it on
    const gw = await mqtt.connectAsync(broker.url, { username: 'gw-3737000001', password: 'gw-password', protocolVersion: 4, clientId: 'gw-3737000001' });
    const now = Date.now();
    await gw.publishAsync(buildTopic({ county: '370102', gatewayId: 'gw-3737000001', channel: 'readings' }), JSON.stringify({ v: 1, gateway: 'gw-3737000001', sentAt: now, readings: [{ seq: 1, device: 'temp-1', metric: 'temperature', ts: now, value: 21.5, quality: 'good' }] }), { qos: 1 });
    await until('reading', () => readings.length === 1);
    expect(readings[0]!.payload).toMatchObject({ gateway: 'gw-3737000001', device: 'temp-1', metric: 'temperature', value: 21.5 });
    await gw.endAsync();

    // the raise node raises an emergency: the event travels ingest → rules → alert → live stream
    helper.getNode('raise').receive({ payload: { device: 'panel-1', category: 'emergency', reason: 'one-key alarm pressed in flow' } });
    await until('raise sent', () => raised.length === 1);
    expect(raised[0]!.payload.type).toBe('flow.emergency');
    await until('event seen', () => events.some((m) => m.payload.type === 'flow.emergency'));
    const alert = await until('alert on the stream', () => alerts.find((m) => m.payload.ruleId === 'flow-emergency' && m.payload.state === 'raised'));
    expect(alert.payload).toMatchObject({ category: 'emergency', deviceId: 'panel-1', orgPath: SCHOOL });

    // the ack node acknowledges it through the API with a comment
    helper.getNode('ackNode').receive({ payload: alert.payload });
    await until('acked', () => acked.length === 1);
    expect(acked[0]!.payload).toMatchObject({ id: alert.payload.id, state: 'acknowledged', acknowledgedBy: 'desk' });
    await until('ack on the stream', () => alerts.some((m) => m.payload.id === alert.payload.id && m.payload.state === 'acknowledged'));

    // clear from the flow: the rule's clear event closes it
    helper.getNode('raise').receive({ payload: { device: 'panel-1' }, clear: true });
    await until('cleared', () => alerts.some((m) => m.payload.id === alert.payload.id && m.payload.state === 'cleared'));

    // a bad request is an error of the node, not a crash
    const ackNode = helper.getNode('ackNode');
    const errors: unknown[] = [];
    ackNode.on('call:error', (call: unknown) => errors.push(call));
    ackNode.receive({ payload: { id: 'no-such-alert' } });
    await until('error reported', () => errors.length === 1);
  });
});
