// The dashboards server on a real database (PGlite and PostgreSQL): login, sessions, CSRF, rate
// limiting, the scope middleware, the alert endpoints and the live stream.
//
// The alerting module is stood in for by a small in-memory one that notifies on the real
// `xiaoan_alert_changes` channel the way the real one does (same payload), so the live path
// (LISTEN → scope filter → SSE) is exercised end to end on the database.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inScope, silentLogger } from '../contract/index.ts';
import { createTestDatabase, ENGINES, type TestDatabase } from '../test/support/databases.ts';
import { createDashboardServer, type DashboardServer } from './index.ts';
import { verifyPassword, hashPassword } from './auth.ts';
import { Client, SCHOOL_A, SCHOOL_B, seedTestUsers, standInAlerting, TEST_PASSWORD } from './testing.ts';
import type { DashboardStore } from './types.ts';

const store: DashboardStore = {
  queries: {
    async listDevices(scope) {
      return [
        { gatewayId: 'gw-3737000001', deviceId: 'smoke-1', orgPath: SCHOOL_A, state: 'online' },
        { gatewayId: 'gw-3737000002', deviceId: 'smoke-9', orgPath: SCHOOL_B, state: 'offline' },
      ].filter((d) => inScope(scope.orgPath, d.orgPath));
    },
    async readings(scope, q) {
      return { scope: scope.orgPath, q };
    },
  },
};

/** Reads SSE events from /api/stream until `until` returns true or the time runs out. */
async function openStream(base: string, cookie: string) {
  const ctrl = new AbortController();
  const r = await fetch(base + '/api/stream', { headers: { cookie }, signal: ctrl.signal });
  const events: { event: string; data: any }[] = [];
  let buffer = '';
  let comments = 0;
  const reader = r.body!.getReader();
  const pump = (async () => {
    const dec = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += dec.decode(value, { stream: true });
        let i;
        while ((i = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          if (block.startsWith(':')) comments++;
          const ev = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (ev && data) events.push({ event: ev, data: JSON.parse(data) });
        }
      }
    } catch {
      /* aborted */
    }
  })();
  return {
    status: r.status,
    events,
    comments: () => comments,
    async waitFor(pred: () => boolean, ms = 5000) {
      const end = Date.now() + ms;
      while (!pred() && Date.now() < end) await new Promise((res) => setTimeout(res, 20));
      return pred();
    },
    close() {
      ctrl.abort();
      return pump;
    },
  };
}

describe('passwords', () => {
  it('hashes with scrypt and verifies only the right password', async () => {
    const h = await hashPassword('correct horse');
    expect(h).toMatch(/^scrypt\$16384\$8\$1\$/);
    expect(await verifyPassword('correct horse', h)).toBe(true);
    expect(await verifyPassword('correct hors', h)).toBe(false);
    expect(await verifyPassword('x', 'garbage')).toBe(false);
  });
});

describe.each(ENGINES)('dashboards server on %s', (engine) => {
  let t: TestDatabase;
  let server: DashboardServer;
  let alerting: ReturnType<typeof standInAlerting>;

  beforeAll(async () => {
    t = await createTestDatabase(engine);
    await seedTestUsers(t.db);
    alerting = standInAlerting(t);
    server = await createDashboardServer({ store, alerting, db: t.db, log: silentLogger, port: 0, heartbeatMs: 100, loginLimit: { maxFailures: 3 } });
  }, 180_000);
  afterAll(async () => {
    await server?.close();
    await t?.drop();
  }, 180_000);

  it('refuses a wrong password with the error shape, and logs in with the right one', async () => {
    const c = new Client(server.url);
    const bad = await c.login('desk', 'nope-nope');
    expect(bad.status).toBe(401);
    expect(bad.body.error).toMatchObject({ code: 'bad_credentials', message: { zh: expect.any(String), en: expect.any(String) } });
    const unknown = await c.login('nobody', 'nope-nope');
    expect(unknown.status).toBe(401);
    const ok = await c.login('desk');
    expect(ok.status).toBe(200);
    const cookie = ok.headers.get('set-cookie')!;
    expect(cookie).toMatch(/xiaoan_session=/);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(ok.body.token).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    expect(ok.body.user).toEqual({ username: 'desk', role: 'desk', orgPath: SCHOOL_A, displayName: 'desk' });
    const me = await c.get('/api/me');
    expect(me.status).toBe(200);
    expect(me.body.permissions).toContain('alerts.act');
    // the database keeps only a hash of the token
    const s = await t.db.query<{ token_hash: string }>('select token_hash from sessions');
    expect(s.rows.map((r) => r.token_hash)).not.toContain(ok.body.token);
  });

  it('needs a login for the API', async () => {
    const c = new Client(server.url);
    const r = await c.get('/api/alerts');
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('unauthenticated');
    const bogus = await c.request('GET', '/api/alerts', undefined, { authorization: 'Bearer not-a-token' });
    expect(bogus.status).toBe(401);
  });

  it('limits failed logins per user, then refuses even the right password until the window passes', async () => {
    const c = new Client(server.url);
    for (let i = 0; i < 3; i++) expect((await c.login('techb', 'wrong-password')).status).toBe(401);
    const limited = await c.login('techb');
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(limited.body.error.code).toBe('too_many_attempts');
  });

  it('scopes alerts to the user subtree, in one place', async () => {
    const a = await alerting.raise({ orgPath: SCHOOL_A });
    const b = await alerting.raise({ orgPath: SCHOOL_B, category: 'hazard', severity: 'major' });
    const desk = new Client(server.url);
    await desk.login('desk');
    const deskb = new Client(server.url);
    await deskb.login('deskb');
    const city = new Client(server.url);
    await city.login('city');
    expect((await desk.get('/api/alerts')).body.alerts.map((x: any) => x.id)).toEqual([a.id]);
    expect((await deskb.get('/api/alerts')).body.alerts.map((x: any) => x.id)).toEqual([b.id]);
    expect((await city.get('/api/alerts')).body.alerts.map((x: any) => x.id).sort()).toEqual([a.id, b.id].sort());
    // site filter narrows inside the scope, and is refused outside it
    expect((await city.get(`/api/alerts?site=${SCHOOL_B}`)).body.alerts.map((x: any) => x.id)).toEqual([b.id]);
    expect((await desk.get(`/api/alerts?site=${SCHOOL_B}`)).status).toBe(403);
    // another school's alert is "not found", never shown, never acknowledged
    expect((await deskb.get(`/api/alerts/${a.id}`)).status).toBe(404);
    expect((await deskb.post(`/api/alerts/${a.id}/ack`, { comment: 'x' })).status).toBe(404);
    expect((await desk.get('/api/devices')).body.devices.map((d: any) => d.deviceId)).toEqual(['smoke-1']);
    expect((await desk.get('/api/alerts?state=bogus')).status).toBe(400);
  });

  it('acknowledges with a comment and resolves; CSRF header needed with the cookie, not with a bearer token', async () => {
    const a = await alerting.raise({ orgPath: SCHOOL_A });
    const desk = new Client(server.url);
    await desk.login('desk');
    const noCsrf = await desk.request('POST', `/api/alerts/${a.id}/ack`, { comment: '已到场' }, { 'x-xiaoan-csrf': 'wrong' });
    expect(noCsrf.status).toBe(403);
    expect(noCsrf.body.error.code).toBe('csrf');
    const crossSite = await desk.request('POST', `/api/alerts/${a.id}/ack`, {}, { origin: 'http://evil.example' });
    expect(crossSite.status).toBe(403);
    const ack = await desk.post(`/api/alerts/${a.id}/ack`, { comment: '已到场查看' });
    expect(ack.status).toBe(200);
    expect(ack.body.alert.state).toBe('acknowledged');
    const again = await desk.post(`/api/alerts/${a.id}/ack`, { comment: 'again' });
    expect(again.status).toBe(409);
    const bearer = await fetch(`${server.url}/api/alerts/${a.id}/resolve`, {
      method: 'POST',
      headers: { authorization: `Bearer ${desk.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ comment: '误报，已复位' }),
    });
    expect(bearer.status).toBe(200);
    const hist = await desk.get(`/api/alerts/${a.id}/history`);
    expect(hist.body.history.map((h: any) => h.toState)).toEqual(['raised', 'acknowledged', 'resolved']);
    expect(hist.body.history[1]).toMatchObject({ actor: 'desk', comment: '已到场查看' });
    // a technician may read alerts but not act on them
    const tech = new Client(server.url);
    await tech.login('tech');
    expect((await tech.post(`/api/alerts/${a.id}/resolve`, {})).status).toBe(403);
  });

  it('validates readings queries and passes the user scope down', async () => {
    const desk = new Client(server.url);
    await desk.login('desk');
    const bad = await desk.get('/api/readings?device=smoke-1&metric=Smoke%20Density');
    expect(bad.status).toBe(400);
    expect(bad.body.error.message.en).toMatch(/metric/);
    const badTime = await desk.get('/api/readings?device=smoke-1&metric=smoke_density&from=yesterday');
    expect(badTime.status).toBe(400);
    expect(badTime.body.error.message.zh).toMatch(/from/);
    const ok = await desk.get('/api/readings?device=smoke-1&metric=smoke_density&from=2026-09-01T00:00:00%2B08:00&to=2026-09-01T08:00:00%2B08:00');
    expect(ok.status).toBe(200);
    expect(ok.body.readings.scope).toBe(SCHOOL_A);
    expect(ok.body.from).toBe(Date.parse('2026-09-01T00:00:00+08:00'));
  });

  it('pushes alert changes live, only to clients whose subtree holds them, with heartbeats', async () => {
    const desk = new Client(server.url);
    await desk.login('desk');
    const deskb = new Client(server.url);
    await deskb.login('deskb');
    const sa = await openStream(server.url, desk.cookie);
    const sb = await openStream(server.url, deskb.cookie);
    expect(sa.status).toBe(200);
    expect(await sa.waitFor(() => sa.events.some((e) => e.event === 'hello'))).toBe(true);
    const a = await alerting.raise({ orgPath: SCHOOL_A, drill: true });
    expect(await sa.waitFor(() => sa.events.some((e) => e.event === 'alert' && e.data.alert.id === a.id))).toBe(true);
    const pushed = sa.events.find((e) => e.event === 'alert')!;
    expect(pushed.data.alert).toMatchObject({ id: a.id, drill: true, state: 'raised' });
    expect(await sa.waitFor(() => sa.comments() > 0)).toBe(true); // heartbeat
    const b = await alerting.raise({ orgPath: SCHOOL_B });
    expect(await sb.waitFor(() => sb.events.some((e) => e.event === 'alert' && e.data.alert.id === b.id))).toBe(true);
    expect(sb.events.some((e) => e.event === 'alert' && e.data.alert.id === a.id)).toBe(false);
    expect(sa.events.some((e) => e.event === 'alert' && e.data.alert.id === b.id)).toBe(false);
    await sa.close();
    await sb.close();
  });

  it('logs out: the session no longer works and its live stream ends', async () => {
    const desk = new Client(server.url);
    await desk.login('desk');
    const s = await openStream(server.url, desk.cookie);
    expect(await s.waitFor(() => s.events.some((e) => e.event === 'hello'))).toBe(true);
    expect((await desk.post('/api/logout')).status).toBe(200);
    expect((await desk.get('/api/me')).status).toBe(401);
    expect(await s.waitFor(() => s.events.some((e) => e.event === 'logout'))).toBe(true);
    await s.close();
  });

  it('serves the web app, refuses path traversal, answers unknown endpoints with the error shape', async () => {
    const index = await fetch(server.url + '/');
    expect(index.status).toBe(200);
    expect(index.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
    expect(await index.text()).toMatch(/校安/);
    const trav = await fetch(server.url + '/..%2f..%2fpackage.json');
    expect(trav.status).toBe(404);
    const none = await fetch(server.url + '/api/nothing');
    expect(none.status).toBe(404);
    expect((await none.json()).error.message.zh).toBeTruthy();
  });

  it('records logins in the audit log, never the password', async () => {
    const r = await t.db.query<{ action: string; detail: unknown }>("select action, detail from audit_log where action like 'login%'");
    expect(r.rows.length).toBeGreaterThan(0);
    expect(JSON.stringify(r.rows)).not.toContain(TEST_PASSWORD);
  });
});
