import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../contract/index.ts';
import { createGateway, parseEdgeConfig, type Gateway } from './index.ts';
import { createManualClock, scriptedKit, scriptedProfile, type ScriptedDevice } from './testing.ts';

const dirs: string[] = [];
const gateways: Gateway[] = [];
afterEach(async () => {
  for (const g of gateways.splice(0)) await g.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const profiles = [
  scriptedProfile('smoke-test', { interval: 5000, deadband: { smoke_density: 0.01 }, integrity: 300_000 }),
  scriptedProfile('gate-test', { interval: 30_000, integrity: 300_000 }, 'mqtt'),
];

async function gateway(devices: Record<string, ScriptedDevice>, token?: string) {
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-http-'));
  dirs.push(dir);
  const clock = createManualClock();
  const cfg = parseEdgeConfig({
    gatewayId: 'gw-http', county: '370102', site: '37/3701/370102/3737000001',
    uplink: { url: 'mqtt://127.0.0.1:9', reconnectMs: 60_000 },
    dataDir: dir, http: { port: 0, ...(token ? { token } : {}) }, deviceBroker: { port: 0 },
  });
  const gw = await createGateway(cfg, { clock, log: silentLogger, drivers: scriptedKit(profiles, devices, clock) });
  gateways.push(gw);
  await gw.start();
  const base = gw.http!.url;
  // the API always wants a token: the configured one, else the one the gateway generated
  const bearer = token ?? gw.http!.token;
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const r = await fetch(base + path, {
      method,
      headers: { 'content-type': typeof body === 'string' ? 'text/csv' : 'application/json', authorization: `Bearer ${bearer}`, ...headers },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    const text = await r.text();
    return { status: r.status, json: (r.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text };
  };
  return { gw, call, clock };
}

const poll = (v: number): ScriptedDevice => ({ writes: [], poll: (_i, now) => [{ kind: 'reading', metric: 'smoke_density', value: v, ts: now, quality: 'good' }] });

describe('gateway REST API', () => {
  it('enrols a device after a live test, lists it with health, and removes it', async () => {
    const { call } = await gateway({ 'smoke-2': poll(0.02) });
    const r = await call('POST', '/api/devices', { id: 'smoke-2', profile: 'smoke-test', url: 'modbus-tcp://10.0.3.21:502?unit=1', name: '实验楼烟感', building: '实验楼', room: '201' });
    expect(r.status).toBe(201);
    expect(r.json.test).toMatchObject({ ok: true, observations: [expect.objectContaining({ metric: 'smoke_density', value: 0.02 })] });
    expect((await call('POST', '/api/devices', { id: 'smoke-2', profile: 'smoke-test', url: 'modbus-tcp://10.0.3.21:502' })).status).toBe(409);
    const list = await call('GET', '/api/devices');
    expect(list.json).toEqual([expect.objectContaining({ id: 'smoke-2', name: '实验楼烟感', source: 'api', expectedIntervalMs: 300_000 })]);
    expect((await call('POST', '/api/devices/smoke-2/test')).json).toMatchObject({ ok: true });
    expect((await call('DELETE', '/api/devices/smoke-2')).status).toBe(200);
    expect((await call('DELETE', '/api/devices/smoke-2')).status).toBe(404);
    expect((await call('GET', '/api/devices')).json).toEqual([]);
  });

  it('does not save a device that fails its live test', async () => {
    const { call } = await gateway({ 'smoke-3': { ...poll(0), failing: true } });
    const r = await call('POST', '/api/devices', { id: 'smoke-3', profile: 'smoke-test', url: 'modbus-tcp://10.0.3.22:502?unit=1' });
    expect(r.status).toBe(422);
    expect(r.json.problems).toEqual([expect.objectContaining({ field: 'url', message: expect.stringMatching(/live test failed/) })]);
    expect((await call('GET', '/api/devices')).json).toEqual([]);
    // without the test it is saved (a technician enrolling before the device is installed)
    expect((await call('POST', '/api/devices?test=false', { id: 'smoke-3', profile: 'smoke-test', url: 'modbus-tcp://10.0.3.22:502?unit=1' })).status).toBe(201);
  });

  it('reports every problem of a request at once, with its field', async () => {
    const { call } = await gateway({});
    const r = await call('POST', '/api/devices', { id: 'bad/id', profile: 'nope', url: 'not a url', intervalMs: 5, colour: 'red' });
    expect(r.status).toBe(422);
    const fields = r.json.problems.map((p: { field: string }) => p.field).sort();
    expect(fields).toEqual(['(row)', 'id', 'intervalMs', 'profile', 'url'].sort());
    const mqttWithoutPassword = await call('POST', '/api/devices', { id: 'gate-2', profile: 'gate-test', url: 'mqtt://gate-2' });
    expect(mqttWithoutPassword.json.problems).toEqual([expect.objectContaining({ field: 'password' })]);
    const wrongScheme = await call('POST', '/api/devices', { id: 'gate-2', profile: 'gate-test', url: 'modbus-tcp://1.2.3.4:502', password: 'long-enough' });
    expect(wrongScheme.json.problems).toEqual([expect.objectContaining({ field: 'url', message: expect.stringMatching(/speaks mqtt/) })]);
    const passwordOnModbus = await call('POST', '/api/devices', { id: 'smoke-9', profile: 'smoke-test', url: 'modbus-tcp://1.2.3.4:502', password: 'long-enough' });
    expect(passwordOnModbus.json.problems).toEqual([expect.objectContaining({ field: 'password' })]);
    const notJson = await call('POST', '/api/devices', '{oops');
    expect(notJson.status).toBe(400);
    expect(notJson.json.error).toMatch(/not JSON/);
  });

  it('imports a CSV whole or not at all, listing every row and field that is wrong', async () => {
    const { call, gw } = await gateway({});
    const bad = [
      'id,profile,url,name,intervalMs,password',
      'smoke-10,smoke-test,modbus-tcp://10.0.0.10:502?unit=1,一层,,',
      'smoke 11,smoke-test,modbus-tcp://10.0.0.11:502?unit=300,二层,abc,',
      'gate-1,gate-test,mqtt://gate-1,东门,,short',
      'smoke-10,nope,,重复,,',
    ].join('\n');
    const r = await call('POST', '/api/devices/import', bad);
    expect(r.status).toBe(422);
    const got = r.json.problems.map((p: { row: number; field: string }) => `${p.row}:${p.field}`).sort();
    expect(got).toEqual(['2:id', '2:intervalMs', '2:url', '3:password', '4:id', '4:profile', '4:url'].sort());
    expect(gw.registry.list()).toEqual([]);
    const good = ['id,profile,url,name,building,room', 'smoke-10,smoke-test,"modbus-tcp://10.0.0.10:502?unit=1","一层, 东侧",教学楼,101', 'smoke-11,smoke-test,modbus-tcp://10.0.0.11:502?unit=2,二层,教学楼,201'].join('\r\n');
    const ok = await call('POST', '/api/devices/import', good);
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ added: ['smoke-10', 'smoke-11'], updated: [] });
    expect(gw.registry.get('smoke-10')).toMatchObject({ name: '一层, 东侧', building: '教学楼', room: '101', source: 'api-import' });
  });

  it('serves /metrics and /healthz openly and wants the token for the API when one is set', async () => {
    const { call } = await gateway({}, 'a-token-of-16-chars-or-more');
    const h = await call('GET', '/healthz', undefined, { authorization: '' });
    expect(h.status).toBe(200);
    expect(h.json).toMatchObject({ status: 'degraded', uplink: expect.any(String), buffer: { depth: 0 } });
    const m = await call('GET', '/metrics', undefined, { authorization: '' });
    expect(m.json).toMatch(/^# HELP xiaoan_edge_buffer_depth/m);
    expect(m.json).toMatch(/^xiaoan_edge_uplink_up\{gateway="gw-http"\} 0$/m);
    expect((await call('GET', '/api/devices', undefined, { authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await call('GET', '/api/devices')).status).toBe(200);
  });

  it('wants a token even when none is configured: generated once, kept in the data folder', async () => {
    const { gw } = await gateway({});
    const token = gw.http!.token;
    expect(token.length).toBeGreaterThanOrEqual(16);
    expect(readFileSync(join(gw.config.dataDir, 'http-token'), 'utf8').trim()).toBe(token);
    expect((statSync(join(gw.config.dataDir, 'http-token')).mode & 0o077)).toBe(0);
    expect((await fetch(gw.http!.url + '/api/devices')).status).toBe(401);
    expect((await fetch(gw.http!.url + '/api/status', { headers: { authorization: 'Bearer ' + token.slice(0, -1) + (token.endsWith('x') ? 'y' : 'x') } })).status).toBe(401);
    expect((await fetch(gw.http!.url + '/api/devices', { headers: { authorization: 'Bearer ' + token } })).status).toBe(200);
  });

  it('never answers with a password or a URL carrying credentials', async () => {
    const { call } = await gateway({ 'smoke-4': poll(0.02) });
    expect((await call('POST', '/api/devices?test=false', { id: 'smoke-4', profile: 'smoke-test', url: 'modbus-tcp://admin:url-secret-1@10.0.3.24:502?unit=1' })).status).toBe(201);
    expect((await call('POST', '/api/devices?test=false', { id: 'gate-4', profile: 'gate-test', url: 'mqtt://gate-4', password: 'device-secret-1' })).status).toBe(201);
    const answers = await Promise.all(['/api/devices', '/api/devices/smoke-4', '/api/devices/gate-4', '/api/status', '/api/commands'].map((p) => call('GET', p)));
    for (const a of answers) {
      expect(a.status).toBe(200);
      const text = JSON.stringify(a.json);
      expect(text).not.toContain('url-secret-1');
      expect(text).not.toContain('device-secret-1');
    }
    expect(answers[1]!.json.url).toBe('modbus-tcp://admin:***@10.0.3.24:502?unit=1');
  });
});
