// The access matrix: every route in Fastify's own route table, called as every role, from inside
// and from outside the subtree that holds the data (school A), and without a login. Routes come
// from the server (collected with onRoute), not from a list here: a route added later is called
// too, with its path parameters filled from FIXTURE; a route without a declared permission and
// scope rule fails. Probes add exact expectations where a route needs a particular body.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inScope } from '../contract/index.ts';
import { PERMISSIONS, type Permission } from './access.ts';
import { ROUTE_SCOPES } from './routes.ts';
import type { RouteInfo } from './server.ts';
import { createCameraService } from './cameras.ts';
import { seedUser, type Role } from './auth.ts';
import { Client, SCHOOL_A, startStack, TEST_PASSWORD, TEST_USERS } from './testing.ts';

interface Probe {
  path: string;
  body?: unknown;
  /** statuses accepted from a permitted user whose subtree holds school A */
  inside: number[];
  /** statuses accepted from a permitted user outside it */
  outside: number[];
  /** whether a 2xx answer shows school A's data */
  leaks?: (body: any) => boolean;
  /** the answer is about the account in the body, not the caller's view of the tree */
  ownAccount?: boolean;
}

/** Marks school A's data in an answer: its school code (in its org path and gateway id). */
const SCHOOL_A_MARK = '3737000001';

const MORE_USERS: { username: string; role: Role; orgPath: string }[] = [
  { username: 'qingdao', role: 'admin', orgPath: '37/3702' },
  { username: 'qdauthor', role: 'author', orgPath: '37/3702' },
];

describe('access matrix: every endpoint × every role × inside/outside the subtree', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  let alertId: string;
  let probes: Record<string, Probe>;
  /** values for path parameters, by name, for routes that have no probe */
  let fixture: Record<string, string>;

  beforeAll(async () => {
    stack = await startStack({ rules: true, extras: { cameras: createCameraService({ 'gw-3737000001/cam-1': '/nonexistent' }) } });
    for (const u of MORE_USERS) await seedUser(stack.t.db, { ...u, password: TEST_PASSWORD });
    await stack.seedSmokeHistory(0.2, [0.3]);
    await stack.stage({ type: 'smoke.alarm' });
    await stack.stage({ type: 'device.fault', device: 'temp-1' });
    const platform = (await import('../ingest/index.ts')).scopeOf('37');
    const list = await stack.alerting.list(platform, {});
    alertId = list.find((a) => a.ruleId === 'smoke-alarm')!.id;
    expect(list.filter((a) => a.orgPath === SCHOOL_A).length).toBe(2);
    const now = Date.now();
    await stack.t.db.query(
      `insert into events (gateway_id, seq, device_id, type, ts, priority, drill, data) values
        ('gw-3737000001', 900001, 'smoke-1', 'device.fault', to_timestamp($1 / 1000.0), 'normal', false, '{}'),
        ('gw-3737000001', 900002, 'smoke-1', 'gate.passage', to_timestamp($1 / 1000.0), 'normal', false, '{"direction":"in"}')`,
      [now - 60_000],
    );
    const att = await stack.t.db.query<{ id: number }>(
      `insert into alert_attachments (alert_id, kind, mime, device_id, data, created_at) values ($1, 'snapshot', 'image/jpeg', 'cam-1', $2, now()) returning id::int as id`,
      [alertId, Buffer.from([0xff, 0xd8, 0xff, 0xd9])],
    );
    await stack.store.registerGateway({ id: 'gw-matrix-rm', county: '370102', orgPath: SCHOOL_A, password: 'matrix-password' });
    const enc = encodeURIComponent;
    const since = now - 3600_000;
    const A = 'gw-3737000001';
    fixture = { id: alertId, gatewayId: A, deviceId: 'cam-1', snap: String(att.rows[0]!.id), '*': '' };
    probes = {
      'GET /api/healthz': { path: '/api/healthz', inside: [200], outside: [200] },
      // answers about the account it logs in (school A's desk), whoever calls it
      'POST /api/login': { path: '/api/login', body: { username: 'desk', password: TEST_PASSWORD }, inside: [200], outside: [200], ownAccount: true },
      'POST /api/logout': { path: '/api/logout', inside: [200], outside: [200] },
      'GET /api/me': { path: '/api/me', inside: [200], outside: [200] },
      'GET /api/org': { path: '/api/org', inside: [200], outside: [200], leaks: (b) => b.nodes.some((n: any) => n.path === SCHOOL_A) },
      'GET /api/alerts': { path: '/api/alerts', inside: [200], outside: [200], leaks: (b) => b.alerts.some((a: any) => a.orgPath === SCHOOL_A) },
      'GET /api/alerts/:id': { path: `/api/alerts/${enc(alertId)}`, inside: [200], outside: [404] },
      'GET /api/alerts/:id/history': { path: `/api/alerts/${enc(alertId)}/history`, inside: [200], outside: [404] },
      'POST /api/alerts/:id/ack': { path: `/api/alerts/${enc(alertId)}/ack`, body: { comment: 'matrix' }, inside: [200, 409], outside: [404] },
      'POST /api/alerts/:id/resolve': { path: `/api/alerts/${enc(alertId)}/resolve`, body: { comment: 'matrix' }, inside: [200, 409], outside: [404] },
      'GET /api/stream': { path: '/api/stream', inside: [200], outside: [200] },
      'GET /api/devices': { path: '/api/devices', inside: [200], outside: [200], leaks: (b) => b.devices.some((d: any) => d.gatewayId === A) },
      'GET /api/readings': { path: `/api/readings?device=smoke-1&gateway=${A}&metric=smoke_density&from=${since}`, inside: [200], outside: [200], leaks: (b) => b.readings.points.length > 0 },
      'GET /api/events': { path: `/api/events?device=smoke-1&from=${since}`, inside: [200], outside: [200], leaks: (b) => b.events.length > 0 },
      'GET /api/audit': { path: '/api/audit', inside: [200], outside: [200], leaks: (b) => b.entries.some((e: any) => inScope(SCHOOL_A, e.org_path ?? '')) },
      'GET /api/gateways': { path: '/api/gateways', inside: [200], outside: [200], leaks: (b) => b.gateways.some((g: any) => g.id === A) },
      'GET /api/devices/trouble': { path: '/api/devices/trouble', inside: [200], outside: [200], leaks: (b) => Object.keys(b.counts).some((k) => k.startsWith(A + '/')) },
      'GET /api/profiles': { path: '/api/profiles', inside: [200], outside: [200] },
      // registering inside the subtree: 201 the first time, 409 after; outside it: 403
      'POST /api/gateways': { path: '/api/gateways', body: { id: 'gw-matrix-new', county: '370102', orgPath: SCHOOL_A, password: 'matrix-password' }, inside: [201, 409], outside: [403] },
      'POST /api/gateways/:gatewayId/remove': { path: '/api/gateways/gw-matrix-rm/remove', inside: [200, 404], outside: [404] },
      // no command channel in this stack: 503 proves the request got past scope to the sender
      'POST /api/gateways/:gatewayId/devices': { path: `/api/gateways/${A}/devices`, body: { device: { id: 'x-1', profile: 'temp-humidity-generic', url: 'modbus-tcp://127.0.0.1:1502?unit=1' } }, inside: [503], outside: [404] },
      'POST /api/gateways/:gatewayId/import': { path: `/api/gateways/${A}/import`, body: { csv: 'id,profile,url\nx-2,temp-humidity-generic,modbus-tcp://127.0.0.1:1502' }, inside: [503, 200], outside: [404] },
      'POST /api/gateways/:gatewayId/devices/:deviceId/test': { path: `/api/gateways/${A}/devices/smoke-1/test`, inside: [503], outside: [404] },
      'POST /api/gateways/:gatewayId/devices/:deviceId/remove': { path: `/api/gateways/${A}/devices/smoke-1/remove`, inside: [503], outside: [404] },
      'POST /api/gateways/:gatewayId/discover': { path: `/api/gateways/${A}/discover`, inside: [503], outside: [404] },
      'GET /api/rules': { path: '/api/rules', inside: [200], outside: [200] },
      'GET /api/rules/:id/versions': { path: '/api/rules/smoke-sustained/versions', inside: [200], outside: [200] },
      'POST /api/rules/:id/backtest': { path: '/api/rules/smoke-sustained/backtest', body: { param: 'threshold', from: 0.1, to: 0.2, step: 0.05, since, until: now }, inside: [200], outside: [200], leaks: (b) => b.records > 0 },
      'POST /api/rules/:id': { path: '/api/rules/smoke-sustained', body: { overrides: [{ scope: '37/3701/370102', params: { threshold: 0.14 } }], note: 'matrix probe' }, inside: [200], outside: [403] },
      'GET /api/overview': { path: '/api/overview', inside: [200], outside: [200], leaks: (b) => b.regions.some((r: any) => r.emergency + r.hazard + r.drills > 0) },
      'GET /api/overview/accidents.csv': { path: `/api/overview/accidents.csv?from=${since}`, inside: [200], outside: [200], leaks: (b) => String(b).trim().split('\r\n').length > 1 },
      'GET /api/vendor/jsmpeg.js': { path: '/api/vendor/jsmpeg.js', inside: [200], outside: [200] },
      'GET /api/alerts/:id/camera': { path: `/api/alerts/${enc(alertId)}/camera`, inside: [200], outside: [404] },
      'GET /api/alerts/:id/snapshot/:snap': { path: `/api/alerts/${enc(alertId)}/snapshot/${att.rows[0]!.id}`, inside: [200], outside: [404] },
      'GET /api/cameras/live': { path: '/api/cameras/live', inside: [200], outside: [200] },
      // a plain GET of the WebSocket route: scope is checked before the upgrade would happen
      'GET /api/cameras/:gatewayId/:deviceId/live': { path: `/api/cameras/${A}/cam-1/live`, inside: [426], outside: [404] },
    };
  }, 180_000);
  afterAll(async () => {
    await stack?.close();
  }, 180_000);

  const keyOf = (r: RouteInfo) => `${r.method} ${r.pattern}`;
  /** The probe of a route, or a generic one: parameters from the fixture, an empty body. */
  function probeOf(r: RouteInfo): Probe & { generic?: boolean } {
    const p = probes[keyOf(r)];
    if (p) return p;
    const path = r.pattern.replace(/:(\w+)|\*/g, (m, name?: string) => {
      const v = fixture[name ?? '*'];
      if (v === undefined) throw new Error(`no fixture value for path parameter ${m} of ${keyOf(r)}: add one to FIXTURE`);
      return encodeURIComponent(v);
    });
    return { path, inside: [], outside: [], generic: true };
  }

  async function call(c: Client | null, method: string, p: Probe) {
    const base = stack.server.url;
    if (p.path === '/api/stream') {
      const ctrl = new AbortController();
      const r = await fetch(base + p.path, { headers: c ? { cookie: c.cookie } : {}, signal: ctrl.signal });
      ctrl.abort();
      return { status: r.status, body: null, text: '' };
    }
    const client = c ?? new Client(base);
    const r = await client.request(method, p.path, method === 'GET' ? undefined : (p.body ?? {}));
    return { ...r, text: typeof r.body === 'string' ? r.body : JSON.stringify(r.body) };
  }

  it('declares a permission and a scope rule on every route Fastify serves', () => {
    const routes = stack.server.routes();
    expect(routes.length).toBeGreaterThan(40);
    const undeclared = routes.filter((r) => r.permission === undefined || !ROUTE_SCOPES.includes(r.scope)).map(keyOf);
    expect(undeclared).toEqual([]);
    // every permission named exists in the table; data routes are scoped
    for (const r of routes) if (r.permission !== null) expect(Object.keys(PERMISSIONS)).toContain(r.permission);
    expect(routes.filter((r) => r.pattern.startsWith('/api/') && r.permission === null).map(keyOf).sort()).toEqual(
      ['GET /api/healthz', 'GET /api/vendor/jsmpeg.js', 'POST /api/login'].sort(),
    );
  });

  it('refuses every protected route without a login', async () => {
    const wrong: string[] = [];
    for (const r of stack.server.routes()) {
      if (r.permission === null) continue;
      const res = await call(null, r.method, probeOf(r));
      if (res.status !== 401) wrong.push(`${keyOf(r)}: ${res.status}`);
    }
    expect(wrong).toEqual([]);
  }, 120_000);

  it('gives each role exactly its permissions, and data only inside its subtree', async () => {
    const users = [...TEST_USERS, ...MORE_USERS];
    const wrong: string[] = [];
    const cells: string[] = [];
    const routes = stack.server.routes();
    for (const u of users) {
      const inside = inScope(u.orgPath, SCHOOL_A);
      const c = new Client(stack.server.url);
      expect((await c.login(u.username)).status).toBe(200);
      for (const r of routes) {
        const key = keyOf(r);
        const p = probeOf(r);
        let client: Client | null = c;
        if (key === 'POST /api/logout') {
          client = new Client(stack.server.url);
          await client.login(u.username);
        }
        const res = await call(client, r.method, p);
        const allowed = r.permission === null || (PERMISSIONS[r.permission as Permission] as readonly string[]).includes(u.role);
        const cell = `${u.username}(${u.role}@${u.orgPath}) ${key}`;
        if (!allowed) {
          if (res.status !== 403) wrong.push(`${cell}: expected 403, got ${res.status}`);
          cells.push(`${cell} 403`);
          continue;
        }
        const expected = inside ? p.inside : p.outside;
        if (expected.length && !expected.includes(res.status)) wrong.push(`${cell}: expected ${expected.join('|')}, got ${res.status} ${res.text.slice(0, 200)}`);
        if (!expected.length && (res.status === 401 || res.status === 403 || res.status >= 500)) wrong.push(`${cell}: a permitted user got ${res.status} ${res.text.slice(0, 200)}`);
        if (p.leaks && res.status === 200) {
          const leaked = p.leaks(res.body);
          if (leaked !== inside) wrong.push(`${cell}: ${inside ? 'should see' : 'must not see'} school A's data`);
        }
        // whatever the route, a user outside school A's subtree never gets school A's data
        if (!inside && !p.ownAccount && res.status < 300 && res.text.includes(SCHOOL_A_MARK)) wrong.push(`${cell}: answer shows school A: ${res.text.slice(0, 200)}`);
        cells.push(`${cell} ${res.status}`);
      }
    }
    expect(wrong).toEqual([]);
    // the matrix really covered every role and both sides of the tree
    expect(new Set(users.map((u) => u.role))).toEqual(new Set(['desk', 'tech', 'author', 'admin']));
    expect(users.some((u) => !inScope(u.orgPath, SCHOOL_A) && u.role === 'admin')).toBe(true);
    expect(cells.length).toBe(users.length * routes.length);
  }, 180_000);
});
