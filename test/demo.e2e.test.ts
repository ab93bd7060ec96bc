// The walking skeleton end to end, on the same wiring `npm start` runs: simulated Modbus and MQTT
// devices → edge gateway → aedes → ingest worker → rules → alerts → API and live stream.
// Runs on PGlite (the embedded default) and on the PostgreSQL server at 127.0.0.1:5432.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { silentLogger, buildTopic } from '../contract/index.ts';
import { readDemoSecrets, startDemo, type Demo } from '../cli/demo.ts';
import { DEMO } from '../cli/demo-school.ts';
import { createTestDatabase, type Engine, type TestDatabase } from './support/databases.ts';

const PASSWORD = 'demo-password-for-tests';

async function login(base: string, username: string): Promise<string> {
  const r = await fetch(`${base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: PASSWORD }) });
  expect(r.status, `login ${username}`).toBe(200);
  return ((await r.json()) as { token: string }).token;
}

async function alerts(base: string, token: string): Promise<Array<Record<string, unknown>>> {
  const r = await fetch(`${base}/api/alerts`, { headers: { authorization: `Bearer ${token}` } });
  expect(r.status).toBe(200);
  const body = (await r.json()) as { alerts: Array<Record<string, unknown>> } | Array<Record<string, unknown>>;
  return Array.isArray(body) ? body : body.alerts;
}

/** Collects the `alert` events of an SSE stream until closed. */
function openStream(base: string, token: string) {
  const got: Array<{ alert: Record<string, unknown> }> = [];
  const ac = new AbortController();
  const ready = (async () => {
    const r = await fetch(`${base}/api/stream`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, signal: ac.signal });
    expect(r.status).toBe(200);
    return r;
  })();
  const reading = ready.then(async (r) => {
    const dec = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (/^event: alert$/m.test(frame)) {
            const data = frame.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
            got.push(JSON.parse(data));
          }
        }
      }
    } catch {
      /* aborted */
    }
  });
  return { got, ready, close: async () => { ac.abort(); await reading; } };
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 45_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe.each<Engine>(['pglite', 'postgres'])('demo end to end on %s', (engine) => {
  let demo: Demo;
  let dir: string;
  let pgdb: TestDatabase | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xiaoan-e2e-'));
    if (engine === 'postgres') pgdb = await createTestDatabase('postgres', { migrate: false });
    demo = await startDemo({
      dataDir: dir,
      databaseUrl: pgdb?.url,
      port: 0,
      password: PASSWORD,
      drillAfterMs: 3_000,
      drillEveryMs: 0,
      log: silentLogger,
    });
  }, 90_000);

  afterAll(async () => {
    await demo?.stop();
    await pgdb?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('delivers the staged drill alarm to the desk through the API and the live stream, and to nobody outside the school', async () => {
    const desk = await login(demo.url, 'desk');
    const other = await login(demo.url, 'desk2');
    const deskStream = openStream(demo.url, desk);
    const otherStream = openStream(demo.url, other);
    await deskStream.ready;
    await otherStream.ready;

    const isDrillSmoke = (a: Record<string, unknown>) =>
      a.drill === true && a.category === 'emergency' && a.deviceId === 'smoke-1' && String(a.ruleId).startsWith('smoke');

    const alarm = await until('the drill alarm in GET /api/alerts', async () => (await alerts(demo.url, desk)).find(isDrillSmoke));
    expect(alarm.orgPath).toBe(DEMO.school.orgPath);
    expect(alarm.state).toBe('raised');

    await until('the drill alarm on the live stream', async () => deskStream.got.some((e) => isDrillSmoke(e.alert)));

    // The other school's desk sees neither the alert nor its live push.
    expect((await alerts(demo.url, other)).filter(isDrillSmoke)).toEqual([]);
    expect(otherStream.got.filter((e) => e.alert.orgPath === DEMO.school.orgPath)).toEqual([]);

    // The desk acknowledges it; the change is visible and recorded with who did it.
    const ack = await fetch(`${demo.url}/api/alerts/${alarm.id}/ack`, {
      method: 'POST',
      headers: { authorization: `Bearer ${desk}`, 'content-type': 'application/json' },
      body: JSON.stringify({ comment: '演练，已确认 drill acknowledged' }),
    });
    expect(ack.status).toBe(200);
    const after = (await alerts(demo.url, desk)).find((a) => a.id === alarm.id)!;
    expect(after.state).toBe('acknowledged');
    expect(after.acknowledgedBy).toBe('desk');

    await deskStream.close();
    await otherStream.close();
  }, 90_000);

  it('lists the school devices with their state, and readings from the Modbus simulators', async () => {
    const tech = await login(demo.url, 'tech');
    const devices = await until('devices online', async () => {
      const r = await fetch(`${demo.url}/api/devices`, { headers: { authorization: `Bearer ${tech}` } });
      const body = (await r.json()) as { devices?: Array<Record<string, unknown>> } | Array<Record<string, unknown>>;
      const list = Array.isArray(body) ? body : body.devices ?? [];
      return list.some((d) => (d.deviceId ?? d.id) === 'temp-1' && d.state === 'online') && list;
    });
    expect(devices.map((d) => d.deviceId ?? d.id)).toEqual(expect.arrayContaining(['smoke-1', 'temp-1', 'gate-1', 'kiosk-1', 'cam-1']));
    // where a device is reaches the centre: the desk filters by building, linkage releases a building's gates
    expect(devices.find((d) => d.deviceId === 'smoke-1')).toMatchObject({ building: '教学楼 Teaching block', room: '1F' });
    // what each device can do reaches the centre with the birth: linkage and the camera page act on it, not on names
    expect(devices.find((d) => d.deviceId === 'gate-1')).toMatchObject({ capabilities: { 'evacuation-release': [{ point: 'release', value: 'fire-alarm' }] } });
    expect(devices.find((d) => d.deviceId === 'cam-1')).toMatchObject({ capabilities: { snapshot: true } });
    expect(devices.find((d) => d.deviceId === 'smoke-1')).toMatchObject({ capabilities: { alarms: { 'smoke.alarm': 'fire' } } });

    const to = Date.now() + 1000;
    const readings = await until('temperature readings', async () => {
      const r = await fetch(`${demo.url}/api/readings?device=temp-1&metric=temperature&from=${to - 600_000}&to=${to}`, { headers: { authorization: `Bearer ${tech}` } });
      expect(r.status).toBe(200);
      const body = (await r.json()) as { readings: { points: Array<{ value: number }> } };
      return body.readings.points.length > 0 && body.readings.points;
    });
    // the simulator's switch room is at 20–25 °C: the register scale and sign came through
    expect(readings[0]!.value).toBeGreaterThan(15);
    expect(readings[0]!.value).toBeLessThan(30);

    // Another school's desk cannot read them.
    const other = await login(demo.url, 'desk2');
    const denied = await fetch(`${demo.url}/api/readings?device=temp-1&metric=temperature&from=${to - 600_000}&to=${to}`, { headers: { authorization: `Bearer ${other}` } });
    const deniedBody = (await denied.json()) as { readings?: { points: unknown[] } };
    expect(denied.status === 404 || denied.status === 403 || (deniedBody.readings?.points ?? []).length === 0).toBe(true);
  }, 90_000);

  it('dead-letters bad uplink messages with a reason and keeps going', async () => {
    const secrets = await readDemoSecrets(dir); // sealed at rest (edge/at-rest.ts)
    const client = await mqtt.connectAsync(demo.broker.url, { username: DEMO.gatewayId, password: secrets.gatewayPassword, clientId: `${DEMO.gatewayId}-e2e`, protocolVersion: 4 }); // a gateway's second connection: {gatewayId}-{suffix}
    const topic = buildTopic({ county: DEMO.county, gatewayId: DEMO.gatewayId, channel: 'readings' });
    await client.publishAsync(topic, 'this is not json', { qos: 1 });
    await client.publishAsync(topic, JSON.stringify({ v: 1, gateway: DEMO.gatewayId, sentAt: Date.now(), readings: [{ seq: 1, device: 'x', metric: 'BAD', ts: 1, value: 'nope' }] }), { qos: 1 });
    await client.endAsync();

    const rows = await until('two dead letters', async () => {
      const r = await demo.store.db.query<{ reason: string }>('select reason from dead_letters order by id');
      return r.rows.length >= 2 && r.rows;
    });
    expect(rows.map((r) => r.reason)).toEqual(expect.arrayContaining(['not_json', 'schema']));

    // The stream goes on: new readings still land after the poison messages.
    const before = await demo.store.db.query<{ n: number }>('select count(*)::int as n from readings');
    demo.sims.temp.set('temperature', 31.5); // beyond the deadband: the gateway reports it
    await until('more readings after the bad ones', async () => {
      const r = await demo.store.db.query<{ n: number }>('select count(*)::int as n from readings');
      return r.rows[0]!.n > before.rows[0]!.n;
    });
  }, 90_000);
});
