// Test helpers for the dashboards' own tests: an HTTP client that keeps a session like a browser
// does, and demo-like users in two schools. Not part of the module's face (index.ts).

import { inScope } from '../contract/index.ts';
import type { Db } from '../ingest/db.ts';
import type { Scope } from '../ingest/scope.ts';
import type { DashboardAlerting } from './types.ts';
import { seedUser, type Role } from './auth.ts';

export const SCHOOL_A = '37/3701/370102/3737000001';
export const SCHOOL_B = '37/3701/370103/3737000002';
export const TEST_PASSWORD = 'test-password-1';

export const TEST_USERS: { username: string; role: Role; orgPath: string }[] = [
  { username: 'desk', role: 'desk', orgPath: SCHOOL_A },
  { username: 'tech', role: 'tech', orgPath: SCHOOL_A },
  { username: 'author', role: 'author', orgPath: '37' },
  { username: 'county', role: 'admin', orgPath: '37/3701/370102' },
  { username: 'city', role: 'admin', orgPath: '37/3701' },
  { username: 'province', role: 'admin', orgPath: '37' },
  { username: 'deskb', role: 'desk', orgPath: SCHOOL_B },
  { username: 'techb', role: 'tech', orgPath: SCHOOL_B },
];

export async function seedTestUsers(db: Db) {
  for (const u of TEST_USERS) await seedUser(db, { ...u, password: TEST_PASSWORD, displayName: u.username });
}

export interface HttpResult {
  status: number;
  headers: Headers;
  body: any;
}

/** A client that logs in and then sends its cookie and CSRF token like the web app does. */
export class Client {
  cookie = '';
  csrf = '';
  token = '';
  constructor(readonly base: string) {}

  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
    const h: Record<string, string> = { ...headers };
    if (this.cookie) h.cookie = this.cookie;
    if (this.csrf && method !== 'GET' && !('x-xiaoan-csrf' in h)) h['x-xiaoan-csrf'] = this.csrf;
    if (body !== undefined) h['content-type'] = 'application/json';
    const r = await fetch(this.base + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: r.status, headers: r.headers, body: parsed };
  }

  async login(username: string, password = TEST_PASSWORD): Promise<HttpResult> {
    const r = await this.request('POST', '/api/login', { username, password });
    if (r.status === 200) {
      this.cookie = (r.headers.get('set-cookie') ?? '').split(';')[0]!;
      this.csrf = r.body.csrfToken;
      this.token = r.body.token;
    }
    return r;
  }

  get(path: string) {
    return this.request('GET', path);
  }
  post(path: string, body: unknown = {}) {
    return this.request('POST', path, body);
  }
}

/**
 * A small in-memory alerting module for the dashboards' own tests, notifying on the real
 * `xiaoan_alert_changes` channel with the same payload as ingest/alerts.
 */
export function standInAlerting(t: { db: Db }) {
  const alerts: any[] = [];
  const history: Record<string, any[]> = {};
  const notify = async (a: any) =>
    t.db.query('select pg_notify($1, $2)', ['xiaoan_alert_changes', JSON.stringify({ id: a.id, orgPath: a.orgPath, state: a.state, category: a.category, severity: a.severity, drill: a.drill })]);
  const visible = (scope: Scope, id: string) => alerts.find((a) => a.id === id && inScope(scope.orgPath, a.orgPath)) ?? null;
  const alerting: DashboardAlerting & { raise(a: Partial<any>): Promise<any>; seen: Scope[] } = {
    seen: [],
    async list(scope, filter = {}) {
      this.seen.push(scope);
      return alerts.filter((a) => inScope(scope.orgPath, a.orgPath) && (!filter.state || a.state === filter.state) && (!filter.category || a.category === filter.category));
    },
    async get(scope, id) {
      return visible(scope, id);
    },
    async history(scope, id) {
      return visible(scope, id) ? history[id]! : null;
    },
    async acknowledge(scope, id, user, comment) {
      const a = visible(scope, id);
      if (!a) return null;
      if (a.state !== 'raised') throw Object.assign(new Error(`alert ${id} is already ${a.state}`), { code: 'conflict' });
      Object.assign(a, { state: 'acknowledged', acknowledgedBy: user, acknowledgedAt: Date.now() });
      history[id]!.push({ action: 'acknowledged', toState: 'acknowledged', actor: user, comment, at: Date.now() });
      await notify(a);
      return a;
    },
    async resolve(scope, id, user, comment) {
      const a = visible(scope, id);
      if (!a) return null;
      Object.assign(a, { state: 'resolved', resolvedBy: user, resolvedAt: Date.now() });
      history[id]!.push({ action: 'resolved', toState: 'resolved', actor: user, comment, at: Date.now() });
      await notify(a);
      return a;
    },
    async raise(partial) {
      const a = { id: String(alerts.length + 1), ruleId: 'smoke-sustained', title: { zh: '烟雾浓度持续超标', en: 'Smoke' }, category: 'emergency', severity: 'critical', state: 'raised', drill: false, orgPath: SCHOOL_A, gatewayId: 'gw-3737000001', deviceId: 'smoke-1', raisedAt: Date.now(), ...partial };
      alerts.push(a);
      history[a.id] = [{ action: 'raised', toState: 'raised', actor: 'rule:smoke-sustained', at: a.raisedAt }];
      await notify(a);
      return a;
    },
  };
  return alerting;
}


/**
 * The real tiers the dashboards sit on, without the broker: a store on a test database with the
 * demo org tree, two schools' gateways and devices, the real alerting module with the built-in
 * rules, test users, and the dashboards server. `stage()` feeds an event batch to the alerting
 * listener exactly as an ingest worker does after storing it.
 */
export async function startStack(opts: {
  engine?: 'pglite' | 'postgres';
  extras?: import('./types.ts').DashboardExtras;
  commands?: import('./types.ts').CommandSenderLike;
  /** connect the rules service (rules page, backtest) */
  rules?: boolean;
  /** more server options (limits) */
  server?: Pick<import('./types.ts').DashboardServerOptions, 'loginLimit' | 'liveLimits'>;
} = {}) {
  const { createTestDatabase } = await import('../test/support/databases.ts');
  const { openStore } = await import('../ingest/index.ts');
  const { createAlerting, loadLibrary } = await import('../ingest/alerts/index.ts');
  const { silentLogger } = await import('../contract/index.ts');
  const { createDashboardServer } = await import('./server.ts');
  const t = await createTestDatabase(opts.engine ?? 'pglite');
  const store = await openStore(t.db);
  await store.seedOrgTree({ demo: true });
  const now = Date.now();
  const schools = [
    { gw: 'gw-3737000001', orgPath: SCHOOL_A, county: '370102' },
    { gw: 'gw-3737000002', orgPath: SCHOOL_B, county: '370103' },
  ];
  for (const s of schools) {
    await store.registerGateway({ id: s.gw, county: s.county, orgPath: s.orgPath, name: s.gw, password: 'gateway-secret-1' });
    await store.applyGatewayStatus({
      v: 1, gateway: s.gw, state: 'online', ts: now,
      devices: [
        { id: 'smoke-1', profile: 'smoke-photoelectric-generic', name: '一号楼三层烟感', state: 'online', lastSeen: now, expectedIntervalMs: 60_000 },
        { id: 'temp-1', profile: 'temp-humidity-generic', name: '配电室温湿度', state: 'online', lastSeen: now, expectedIntervalMs: 60_000 },
        { id: 'cam-1', profile: 'onvif-camera-generic', name: '一号楼走廊摄像机', state: 'online', lastSeen: now, expectedIntervalMs: 60_000, capabilities: { snapshot: true } },
        { id: 'cam-2', profile: 'onvif-camera-generic', name: '东门摄像机', state: 'online', lastSeen: now, expectedIntervalMs: 60_000, capabilities: { snapshot: true } },
      ],
    });
  }
  await t.db.query(`update devices set building = '一号楼', room = '301' where device_id = 'smoke-1'`);
  await t.db.query(`update devices set building = '一号楼', room = '3F' where device_id = 'cam-1'`);
  await t.db.query(`update devices set building = '东门' where device_id = 'cam-2'`);
  const rules = await loadLibrary();
  const alerting = await createAlerting({ db: t.db, rules, log: silentLogger, tickMs: 0 });
  await seedTestUsers(t.db);
  const extras = { ...opts.extras };
  if (opts.rules) {
    const lib = await import('../rules/index.ts');
    const { createRulesService } = await import('./rules-api.ts');
    extras.rules = await createRulesService({ db: t.db, store, alerting, lib, initial: rules, clock: { now: () => Date.now() } as never, log: silentLogger });
  }
  const server = await createDashboardServer({ store, alerting, db: t.db, log: silentLogger, port: 0, extras, commands: opts.commands, ...opts.server });
  let seq = 1;
  return {
    t,
    store,
    alerting,
    server,
    /** an event from a device of school A (or B), as stored by ingest */
    async stage(event: { type: string; device?: string; drill?: boolean; data?: Record<string, unknown> }, school: 0 | 1 = 0) {
      const s = schools[school]!;
      await alerting.listener.onStored({
        gateway: { id: s.gw, orgPath: s.orgPath, county: s.county },
        readings: [],
        events: [{ seq: seq++, device: event.device ?? 'smoke-1', type: event.type, ts: Date.now(), priority: 'alarm', drill: event.drill ?? false, data: event.data ?? {} }],
      });
    },
    /**
     * Smoke density history for school A's smoke-1: every 5 s for the last `hours`, at 0.02 with
     * episodes of 30 s at each of `peaks` (so a threshold sweep has a staircase to find).
     */
    async seedSmokeHistory(hours = 2, peaks = [0.12, 0.18, 0.25]) {
      const end = Date.now() - 60_000;
      const start = end - hours * 3600_000;
      const rows: string[] = [];
      let s = 1_000_000;
      const episode = (ts: number) => {
        const slot = Math.floor((ts - start) / ((end - start) / (peaks.length + 1)));
        const inSlot = (ts - start) % ((end - start) / (peaks.length + 1));
        return slot >= 1 && slot <= peaks.length && inSlot < 30_000 ? peaks[slot - 1]! : 0.02;
      };
      for (let ts = start; ts < end; ts += 5000) rows.push(`('gw-3737000001', ${s++}, 'smoke-1', 'smoke_density', to_timestamp(${ts} / 1000.0), ${episode(ts)}, 'good')`);
      for (let i = 0; i < rows.length; i += 1000) {
        await t.db.query(`insert into readings (gateway_id, seq, device_id, metric, ts, value, quality) values ${rows.slice(i, i + 1000).join(',')}`);
      }
      return rows.length;
    },
    async close() {
      await server.close();
      await alerting.stop();
      await store.close();
      await t.drop();
    },
  };
}
