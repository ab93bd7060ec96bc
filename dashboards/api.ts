// The JSON API. Every handler receives the principal the middleware made (user, role, Scope) and
// passes `ctx.principal.scope` (or a narrower scope from `principal.narrow`) to the store and the
// alerting module; none of them builds a scope or looks at an org path itself.

import { metricSchema, deviceIdSchema, ALERT_CATEGORIES, ALERT_STATES } from '../contract/index.ts';
import { scopeSql, type Scope } from '../ingest/scope.ts';
import { writeAudit } from '../ingest/audit.ts';
import { z } from 'zod';
import type { ApiRouter, RequestContext } from './routes.ts';
import { ApiError, badRequest, notFound } from './http.ts';
import { alertIdParams, alertsQuery, commentBody, dashboardAlertSchema, errorSchema, orgPathParam, timeParam, userSchema } from './schemas.ts';
import type { DashboardAlerting, DashboardExtras, DashboardStore, CommandSenderLike } from './types.ts';
import { registerDeviceApi } from './devices-api.ts';
import { registerGatewayApi } from './gateways-api.ts';
import { registerRulesApi } from './rules-api.ts';
import { registerOverviewApi } from './overview.ts';
import { registerCameraApi } from './cameras.ts';

export interface ApiDeps {
  store: DashboardStore;
  alerting: DashboardAlerting;
  commands?: CommandSenderLike;
  extras: DashboardExtras;
}

export type Closer = () => Promise<void>;

/** Parse a time given as epoch ms or ISO 8601; `name` is the query parameter, for the message. */
export function parseTime(value: string | null, name: string, fallback: number): number {
  if (value === null || value === '') return fallback;
  const n = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(n)) {
    throw badRequest('bad_time', `参数 ${name}="${value}" 不是时间（毫秒时间戳或 ISO 8601，如 2026-09-01T08:00:00+08:00）`,
      `parameter ${name}="${value}" is not a time (epoch ms or ISO 8601, e.g. 2026-09-01T08:00:00+08:00)`);
  }
  return n;
}

/**
 * The optional `?site=` (or another parameter's) filter as a scope inside the user's own; 403
 * when it lies outside. Every page that lets a user narrow their view goes through here.
 */
export function siteScope(ctx: RequestContext, param = 'site'): Scope {
  const site = ctx.url.searchParams.get(param);
  if (!site) return ctx.principal.scope;
  const narrowed = ctx.principal.narrow(site);
  if (!narrowed) {
    throw new ApiError(403, 'outside_scope', {
      zh: `"${site}" 不在您的管辖范围（${ctx.principal.user.orgPath}）内`,
      en: `"${site}" is outside your part of the org tree (${ctx.principal.user.orgPath})`,
    });
  }
  return narrowed;
}

function oneOf<T extends string>(ctx: RequestContext, name: string, allowed: readonly T[]): T | undefined {
  const v = ctx.url.searchParams.get(name);
  if (v === null || v === '') return undefined;
  if (!allowed.includes(v as T)) {
    throw badRequest('bad_filter', `参数 ${name}="${v}" 须为 ${allowed.join(' / ')} 之一`, `parameter ${name}="${v}" must be one of ${allowed.join(', ')}`);
  }
  return v as T;
}

/** Map failures of the alerting module to HTTP: unknown or invisible alert → 404, wrong state → 409. */
export function alertingError(e: unknown): never {
  if (e instanceof ApiError) throw e;
  const err = e as { code?: string; message?: string };
  const msg = String(err?.message ?? e);
  if (err?.code === 'not_found') throw notFound('告警不存在或不在您的管辖范围内', 'alert not found or outside your scope');
  if (err?.code === 'conflict' || err?.code === 'invalid_transition') {
    throw new ApiError(409, 'invalid_state', { zh: `告警当前状态不允许此操作：${msg}`, en: `the alert's state does not allow this: ${msg}` });
  }
  if (err?.code === 'invalid') throw badRequest('invalid', `请求无效：${msg}`, `invalid request: ${msg}`);
  if (err?.code === 'forbidden') throw new ApiError(403, 'forbidden', { zh: `无权操作：${msg}`, en: `forbidden: ${msg}` });
  throw e;
}

/**
 * Add each alert's device name, building and room (from the devices the user may see), so the
 * console can show and filter by building. One device query per gateway involved.
 */
export async function withDevices(store: DashboardStore, scope: Scope, alerts: Record<string, unknown>[]): Promise<Record<string, unknown>[]> {
  const gateways = [...new Set(alerts.map((a) => a.gatewayId as string))].slice(0, 50);
  const byKey = new Map<string, { name?: string; building?: string | null; room?: string | null; location?: string | null }>();
  for (const g of gateways) {
    const devices = (await store.queries.listDevices(scope, { gatewayId: g })) as { gatewayId: string; deviceId: string; name?: string; building?: string | null; room?: string | null; location?: string | null }[];
    for (const d of devices) byKey.set(`${d.gatewayId}/${d.deviceId}`, d);
  }
  return alerts.map((a) => {
    const d = byKey.get(`${a.gatewayId}/${a.deviceId}`);
    return d ? { ...a, deviceName: d.name || null, building: d.building ?? d.location ?? null, room: d.room ?? null } : a;
  });
}

function comment(body: Record<string, unknown>, required: boolean): string | undefined {
  const c = body.comment;
  if (c === undefined || c === null || c === '') {
    if (required) throw badRequest('comment_required', '请填写处置说明', 'a comment is required');
    return undefined;
  }
  if (typeof c !== 'string' || c.length > 1000) throw badRequest('bad_comment', '处置说明须为不超过 1000 字的文本', 'comment must be text of at most 1000 characters');
  return c.trim();
}

export async function audit(
  api: ApiRouter,
  ctx: Pick<RequestContext, 'principal' | 'remote'> | null,
  action: string,
  target: string | null,
  orgPath: string | null,
  detail: Record<string, unknown> = {},
  username?: string,
) {
  // ingest/audit.ts: a null orgPath falls back to the actor's scope, then to the named user's, then the province root
  await writeAudit(api.db, {
    at: api.clock.now(), username: username ?? ctx?.principal?.user.username ?? null, role: ctx?.principal?.role ?? null,
    action, target, orgPath, actorOrgPath: ctx?.principal?.user.orgPath ?? null, remote: ctx?.remote ?? null, detail,
  })
    .catch((e) => api.log.error('audit write failed', { action, error: (e as Error).message }));
}

const tooManyStreams = (perSession: number, perUser: number) =>
  new ApiError(429, 'too_many_streams', {
    zh: `实时推送连接过多（每个会话最多 ${perSession} 个、每个用户最多 ${perUser} 个）；请关闭其他标签页后重试`,
    en: `too many live streams open (at most ${perSession} per session and ${perUser} per user); close other tabs and retry`,
  });

export async function registerApi(api: ApiRouter, deps: ApiDeps): Promise<Closer[]> {
  const { store, alerting } = deps;
  const closers: Closer[] = [];

  api.route('GET', '/api/healthz', { permission: null, scope: 'public', summary: 'Liveness and the number of live-stream clients', response: { 200: z.object({ ok: z.boolean(), liveClients: z.number() }) } }, async (ctx) => {
    ctx.send(200, { ok: true, liveClients: api.live.clients() });
  });

  // ---- session -------------------------------------------------------------------------------
  api.route('POST', '/api/login', {
    permission: null,
    scope: 'public',
    summary: 'Log in: sets the session cookie and returns a bearer token and the CSRF token',
    body: z.object({ username: z.string().max(64).optional(), password: z.string().max(200).optional() }),
    response: { 200: z.object({ token: z.string(), csrfToken: z.string(), expiresAt: z.number(), user: userSchema }), 401: errorSchema, 429: errorSchema },
    bodyLimit: 8 * 1024,
    rateLimit: { max: 120, windowMs: 60_000 },
  }, async (ctx) => {
    const body = ctx.body;
    const username = typeof body.username === 'string' ? body.username.trim() : '';
    const password = typeof body.password === 'string' ? body.password : '';
    if (!username || !password) throw badRequest('credentials_required', '请输入用户名和密码', 'username and password are required');
    // Counted before the hash is checked (see createLoginLimiter): concurrent guesses cannot all pass.
    const attempt = api.limiter.begin(username, ctx.remote);
    if ('wait' in attempt) {
      const wait = attempt.wait;
      const when = wait >= 60_000 ? { zh: `${Math.ceil(wait / 60000)} 分钟`, en: `${Math.ceil(wait / 60000)} min` } : { zh: `${Math.ceil(wait / 1000)} 秒`, en: `${Math.ceil(wait / 1000)} s` };
      throw new ApiError(429, 'too_many_attempts',
        { zh: `登录失败次数过多，请 ${when.zh}后再试`, en: `too many failed logins; try again in ${when.en}` },
        { retryAfterMs: wait });
    }
    const user = await api.sessions.authenticate(username, password);
    if (!user) {
      await audit(api, { remote: ctx.remote } as RequestContext, 'login.failed', username, null, {}, username.slice(0, 64));
      throw new ApiError(401, 'bad_credentials', { zh: '用户名或密码错误', en: 'wrong username or password' });
    }
    attempt.succeeded();
    const s = await api.sessions.create(user);
    await audit(api, { remote: ctx.remote } as RequestContext, 'login', user.username, user.orgPath, {}, user.username);
    api.setSessionCookie(ctx, s.token, s.expiresAt);
    ctx.send(200, { token: s.token, csrfToken: s.csrfToken, expiresAt: s.expiresAt, user });
  });

  api.route('POST', '/api/logout', { permission: 'session', scope: 'own-session', summary: 'Log out: ends the session and its live streams' }, async (ctx) => {
    await api.sessions.destroy(ctx.token);
    api.clearSessionCookie(ctx);
    ctx.send(200, { ok: true });
  });

  api.route('GET', '/api/me', { permission: 'session', scope: 'own-session', summary: 'Who am I: user, CSRF token, permissions, features' }, async (ctx) => {
    const { PERMISSIONS } = await import('./access.ts');
    const p = ctx.principal;
    ctx.send(200, {
      user: p.user,
      csrfToken: p.csrfToken,
      permissions: Object.entries(PERMISSIONS).filter(([, roles]) => (roles as readonly string[]).includes(p.role)).map(([k]) => k),
      features: { rules: !!deps.extras.rules, cameras: !!deps.extras.cameras, commands: !!deps.commands },
    });
  });

  // ---- org tree (names for filters and drill-down) ------------------------------------------
  api.route('GET', '/api/org', { permission: 'session', scope: 'org-subtree', summary: 'The org tree nodes of your subtree (names for filters and drill-down)' }, async (ctx) => {
    const params: unknown[] = [];
    const where = scopeSql(ctx.principal.scope, 'path', params);
    const r = await api.db
      .query<{ path: string; parent: string | null; level: string; code: string; name_zh: string; name_en: string }>(
        `select path, parent, level, code, name_zh, name_en from org_nodes where ${where} order by path limit 5000`,
        params,
      )
      .catch(() => ({ rows: [] as never[] }));
    ctx.send(200, {
      nodes: r.rows.map((n) => ({ path: n.path, parent: n.parent, level: n.level, code: n.code, nameZh: n.name_zh, nameEn: n.name_en })),
    });
  });

  // ---- alerts --------------------------------------------------------------------------------
  api.route('GET', '/api/alerts', { permission: 'alerts.read', scope: 'org-subtree', summary: 'Alerts of your subtree (or of ?site= inside it)', query: alertsQuery, response: { 200: z.object({ alerts: z.array(dashboardAlertSchema) }), 400: errorSchema, 403: errorSchema } }, async (ctx) => {
    const scope = siteScope(ctx);
    const q = ctx.url.searchParams;
    const filter: Record<string, unknown> = {};
    const state = oneOf(ctx, 'state', [...ALERT_STATES, 'open'] as const);
    if (state) filter.state = state;
    const category = oneOf(ctx, 'category', ALERT_CATEGORIES);
    if (category) filter.category = category;
    const building = q.get('building');
    if (building && building.length > 100) throw badRequest('bad_filter', '楼栋名称过长', 'building name too long');
    const drill = oneOf(ctx, 'drill', ['true', 'false'] as const);
    if (drill) filter.drill = drill === 'true';
    const limit = q.get('limit');
    if (limit) {
      const n = Number(limit);
      if (!Number.isInteger(n) || n < 1 || n > 1000) throw badRequest('bad_limit', 'limit 须为 1–1000 的整数', 'limit must be an integer from 1 to 1000');
      filter.limit = n;
    }
    if (q.get('from')) filter.since = parseTime(q.get('from'), 'from', 0);
    if (q.get('to')) filter.until = parseTime(q.get('to'), 'to', 0);
    let alerts = await withDevices(store, scope, (await alerting.list(scope, filter).catch(alertingError)) as Record<string, unknown>[]);
    if (building) alerts = alerts.filter((a) => a.building === building);
    ctx.send(200, { alerts });
  });

  api.route('GET', '/api/alerts/:id', { permission: 'alerts.read', scope: 'org-subtree', summary: 'One alert (404 outside your subtree)', params: alertIdParams, response: { 200: z.object({ alert: dashboardAlertSchema }), 404: errorSchema } }, async (ctx, { id }) => {
    const alert = await alerting.get(ctx.principal.scope, id!).catch(alertingError);
    if (!alert) throw notFound('告警不存在或不在您的管辖范围内', 'alert not found or outside your scope');
    const [withDevice] = await withDevices(store, ctx.principal.scope, [alert as Record<string, unknown>]);
    ctx.send(200, { alert: withDevice });
  });

  api.route('GET', '/api/alerts/:id/history', { permission: 'alerts.read', scope: 'org-subtree', summary: "An alert's state changes", params: alertIdParams }, async (ctx, { id }) => {
    // history() of an invisible alert may be empty rather than an error: check visibility first.
    const alert = await alerting.get(ctx.principal.scope, id!).catch(alertingError);
    if (!alert) throw notFound('告警不存在或不在您的管辖范围内', 'alert not found or outside your scope');
    const history = await alerting.history(ctx.principal.scope, id!).catch(alertingError);
    ctx.send(200, { history });
  });

  for (const [action, verb] of [['ack', 'acknowledge'], ['resolve', 'resolve']] as const) {
    api.route('POST', `/api/alerts/:id/${action}`, { permission: 'alerts.act', scope: 'org-subtree', summary: `${verb === 'acknowledge' ? 'Acknowledge' : 'Resolve'} an alert, with an optional comment`, params: alertIdParams, body: commentBody, response: { 200: z.object({ alert: dashboardAlertSchema }), 404: errorSchema, 409: errorSchema } }, async (ctx, { id }) => {
      const body = ctx.body;
      const text = comment(body, false);
      const scope = ctx.principal.scope;
      // Read first through the scope: an alert outside it is "not found", never "forbidden".
      const before = await alerting.get(scope, id!).catch(alertingError);
      if (!before) throw notFound('告警不存在或不在您的管辖范围内', 'alert not found or outside your scope');
      const result = await alerting[verb](scope, id!, ctx.principal.user.username, text).catch(alertingError);
      if (result === null || result === false) throw notFound('告警不存在或不在您的管辖范围内', 'alert not found or outside your scope');
      const alert = result && typeof result === 'object' && 'id' in (result as object) ? result : await alerting.get(scope, id!);
      const [withDevice] = await withDevices(store, scope, [alert as Record<string, unknown>]);
      ctx.send(200, { alert: withDevice });
    });
  }

  api.route('GET', '/api/stream', { permission: 'alerts.read', scope: 'org-subtree', summary: 'Server-Sent Events: alert changes in your subtree (limited per session and per user)' }, async (ctx) => {
    const open = api.live.count(ctx.token, ctx.principal.user.username);
    if (open.session >= api.limits.streamsPerSession || open.user >= api.limits.streamsPerUser) throw tooManyStreams(api.limits.streamsPerSession, api.limits.streamsPerUser);
    ctx.reply.hijack();
    api.live.attach(ctx.reply.raw, ctx.principal.scope, ctx.principal.user.username, ctx.token);
  });

  // ---- devices and readings ------------------------------------------------------------------
  api.route('GET', '/api/devices', { permission: 'devices.read', scope: 'org-subtree', summary: 'Devices of your subtree with health', query: z.object({ site: orgPathParam, state: z.union([z.enum(['online', 'degraded', 'offline']), z.literal('')]).optional(), building: z.string().max(100).optional() }) }, async (ctx) => {
    const scope = siteScope(ctx);
    const filter: Record<string, unknown> = {};
    const state = oneOf(ctx, 'state', ['online', 'degraded', 'offline'] as const);
    if (state) filter.state = state;
    const building = ctx.url.searchParams.get('building');
    let devices = (await store.queries.listDevices(scope, filter)) as { building?: string | null }[];
    if (building) devices = devices.filter((d) => (d.building ?? (d as { location?: string | null }).location) === building);
    ctx.send(200, { devices });
  });

  api.route('GET', '/api/readings', { permission: 'readings.read', scope: 'org-subtree', summary: "One device's readings of one metric over a time range", query: z.object({ device: z.string().max(64), metric: z.string().max(64), gateway: z.string().max(64).optional(), site: orgPathParam, from: timeParam, to: timeParam }) }, async (ctx) => {
    const q = ctx.url.searchParams;
    const device = q.get('device') ?? '';
    const metric = q.get('metric') ?? '';
    if (!deviceIdSchema.safeParse(device).success) {
      throw badRequest('bad_device', `参数 device="${device}" 须为设备编号（字母、数字、. _ -）`, `parameter device="${device}" must be a device id (letters, digits, . _ -)`);
    }
    if (!metricSchema.safeParse(metric).success) {
      throw badRequest('bad_metric', `参数 metric="${metric}" 须为小写指标名，如 smoke_density`, `parameter metric="${metric}" must be a lower-case metric name such as smoke_density`);
    }
    const now = api.clock.now();
    const to = parseTime(q.get('to'), 'to', now);
    const from = parseTime(q.get('from'), 'from', to - 3600_000);
    if (from >= to) throw badRequest('bad_range', 'from 须早于 to', 'from must be before to');
    if (to - from > 400 * 86400_000) throw badRequest('bad_range', '时间范围不能超过 400 天', 'the range may not exceed 400 days');
    const gatewayId = q.get('gateway') ?? undefined;
    if (gatewayId !== undefined && !deviceIdSchema.safeParse(gatewayId).success) {
      throw badRequest('bad_gateway', `参数 gateway="${gatewayId}" 不是网关编号`, `parameter gateway="${gatewayId}" is not a gateway id`);
    }
    let readings: unknown;
    try {
      readings = await store.queries.readings(siteScope(ctx), { device, metric, from, to, ...(gatewayId ? { gatewayId } : {}) });
    } catch (e) {
      if (e instanceof RangeError) throw badRequest('bad_range', e.message, e.message);
      throw e;
    }
    ctx.send(200, { device, metric, from, to, readings });
  });

  // Events (gate passages, visitor check-ins, alarms). Student movement and visitor records are
  // sensitive personal information (PIPL art. 28): every read of them is audited.
  api.route('GET', '/api/events', { permission: 'readings.read', scope: 'org-subtree', summary: 'Device events (sensitive types are audited on read)', query: z.object({ device: z.string().max(64).optional(), type: z.string().max(100).optional(), site: orgPathParam, from: timeParam, to: timeParam }) }, async (ctx) => {
    if (!store.queries.events) throw new ApiError(503, 'not_available', { zh: '事件查询不可用', en: 'event queries are not available' });
    const q = ctx.url.searchParams;
    const device = q.get('device') ?? undefined;
    if (device !== undefined && !deviceIdSchema.safeParse(device).success) throw badRequest('bad_device', `参数 device="${device}" 不是设备编号`, `parameter device="${device}" is not a device id`);
    const type = q.get('type') ?? undefined;
    if (type !== undefined && !/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/.test(type)) throw badRequest('bad_type', `参数 type="${type}" 须为事件类型，如 gate.forced_open`, `parameter type="${type}" must be an event type such as gate.forced_open`);
    const now = api.clock.now();
    const to = parseTime(q.get('to'), 'to', now);
    const from = parseTime(q.get('from'), 'from', to - 24 * 3600_000);
    if (from >= to) throw badRequest('bad_range', 'from 须早于 to', 'from must be before to');
    const scope = siteScope(ctx);
    const events = (await store.queries.events(scope, { device, type, from, to, limit: 1000 })) as { type: string; orgPath: string; data: Record<string, unknown> }[];
    const sensitive = events.filter((e) => /^(visitor|gate)\./.test(e.type));
    if (sensitive.length) {
      await audit(api, ctx, 'read.sensitive_events', type ?? '(all)', scope.orgPath, { count: sensitive.length, types: [...new Set(sensitive.map((e) => e.type))], from, to });
    }
    ctx.send(200, { events });
  });

  api.route('GET', '/api/audit', { permission: 'audit.read', scope: 'org-subtree', summary: 'The audit log of your subtree (newest 500)' }, async (ctx) => {
    const params: unknown[] = [];
    // Entries about the admin's subtree (and logins of users in it).
    const where = scopeSql(ctx.principal.scope, 'org_path', params);
    const r = await api.db.query<Record<string, unknown>>(
      `select id::float8 as id, (extract(epoch from at) * 1000)::float8 as at, username, role, action, target, org_path, detail
         from audit_log where ${where} order by id desc limit 500`,
      params,
    );
    ctx.send(200, { entries: r.rows.map((x) => ({ ...x, id: Number(x.id), at: Math.round(Number(x.at)) })) });
  });

  closers.push(...(await registerDeviceApi(api, deps)));
  closers.push(...(await registerGatewayApi(api, deps)));
  closers.push(...(await registerRulesApi(api, deps)));
  closers.push(...(await registerOverviewApi(api, deps)));
  closers.push(...(await registerCameraApi(api, deps)));
  return closers;
}
