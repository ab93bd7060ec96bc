// Regional overview for county, city and province staff: open hazards and emergencies by region
// and category, alerts over time, devices online by region, drill-down from province to school,
// and accident statistics for a period as CSV. Every query is limited to the principal's scope
// (or a narrower region inside it, via principal.narrow).

import type { Scope } from '../ingest/scope.ts';
import { scopeSql } from '../ingest/scope.ts';
import { z } from 'zod';
import type { ApiRouter, RequestContext } from './routes.ts';
import type { ApiDeps, Closer } from './api.ts';
import { audit, parseTime, siteScope } from './api.ts';
import { badRequest } from './http.ts';
import { orgPathParam, timeParam } from './schemas.ts';

const DAY = 86_400_000;
const SHANGHAI_OFFSET_S = 8 * 3600; // Asia/Shanghai has no daylight saving

const regionScope = (ctx: RequestContext): Scope => siteScope(ctx, 'region');

/** The child of the scope node that an org path lies under (the scope itself at a leaf). */
const childExpr = (col: string, p: number) => `array_to_string((string_to_array(${col}, '/'))[1:$${p}], '/')`;

/** A date in Asia/Shanghai, YYYY-MM-DD. */
export function shanghaiDate(ms: number): string {
  return new Date(ms + SHANGHAI_OFFSET_S * 1000).toISOString().slice(0, 10);
}
export function shanghaiDateTime(ms: number | null): string {
  if (ms === null) return '';
  return new Date(ms + SHANGHAI_OFFSET_S * 1000).toISOString().slice(0, 19).replace('T', ' ');
}

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  // Also neutralise spreadsheet formulas (CSV injection).
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export async function registerOverviewApi(api: ApiRouter, deps: ApiDeps): Promise<Closer[]> {
  const { store } = deps;
  const db = api.db;

  async function names(paths: string[]): Promise<Map<string, { zh: string; en: string }>> {
    if (paths.length === 0) return new Map();
    const r = await db.query<{ path: string; name_zh: string; name_en: string }>('select path, name_zh, name_en from org_nodes where path = any($1::text[])', [paths]);
    return new Map(r.rows.map((x) => [x.path, { zh: x.name_zh, en: x.name_en || x.name_zh }]));
  }

  api.route('GET', '/api/overview', { permission: 'overview.read', scope: 'org-subtree', summary: 'Open hazards and emergencies, devices and trend by region of your subtree (or ?region= inside it)', query: z.object({ region: orgPathParam, days: z.string().regex(/^\d{1,3}$/).optional() }) }, async (ctx) => {
    const scope = regionScope(ctx);
    const depth = scope.orgPath.split('/').length + 1;
    const days = Number(ctx.url.searchParams.get('days') ?? 30);
    if (!Number.isInteger(days) || days < 1 || days > 366) throw badRequest('bad_days', 'days 须为 1–366 的整数', 'days must be an integer from 1 to 366');
    const now = api.clock.now();

    const openParams: unknown[] = [depth];
    const open = await db.query<{ region: string; category: string; n: number; drills: number }>(
      `select ${childExpr('org_path', 1)} as region, category, count(*) filter (where not drill)::int as n, count(*) filter (where drill)::int as drills
         from alerts where state in ('raised', 'acknowledged') and ${scopeSql(scope, 'org_path', openParams)}
        group by 1, 2 order by 1, 2`,
      openParams,
    );

    const trendParams: unknown[] = [now - days * DAY];
    const trend = await db.query<{ day: number; category: string; n: number }>(
      `select floor((extract(epoch from raised_at) + ${SHANGHAI_OFFSET_S}) / 86400)::int as day, category, count(*)::int as n
         from alerts where raised_at >= to_timestamp($1 / 1000.0) and not drill and ${scopeSql(scope, 'org_path', trendParams)}
        group by 1, 2 order by 1, 2`,
      trendParams,
    );

    const devices = ((await store.queries.countsByRegion?.(scope)) ?? []) as { orgPath: string; nameZh: string | null; nameEn: string | null; devices: number; devicesOnline: number; devicesOffline: number; gateways: number; gatewaysOnline: number }[];

    const regions = new Map<string, { path: string; emergency: number; hazard: number; drills: number; devices: number; devicesOnline: number; devicesOffline: number; gateways: number; gatewaysOnline: number }>();
    const region = (path: string) => {
      let r = regions.get(path);
      if (!r) regions.set(path, (r = { path, emergency: 0, hazard: 0, drills: 0, devices: 0, devicesOnline: 0, devicesOffline: 0, gateways: 0, gatewaysOnline: 0 }));
      return r;
    };
    for (const row of open.rows) {
      const r = region(row.region);
      if (row.category === 'emergency') r.emergency += Number(row.n);
      else r.hazard += Number(row.n);
      r.drills += Number(row.drills);
    }
    for (const d of devices) Object.assign(region(d.orgPath), { devices: d.devices, devicesOnline: d.devicesOnline, devicesOffline: d.devicesOffline, gateways: d.gateways, gatewaysOnline: d.gatewaysOnline });
    // Child nodes without data still appear, so the drill-down shows the whole tree level.
    const kidsParams: unknown[] = [scope.orgPath];
    const kids = await db.query<{ path: string }>('select path from org_nodes where parent = $1 order by path limit 500', kidsParams);
    for (const k of kids.rows) region(k.path);
    const n = await names([...regions.keys(), scope.orgPath]);

    const series: Record<string, { day: string; emergency: number; hazard: number }> = {};
    for (let i = days - 1; i >= 0; i--) {
      const d = shanghaiDate(now - i * DAY);
      series[d] = { day: d, emergency: 0, hazard: 0 };
    }
    for (const row of trend.rows) {
      const d = new Date(Number(row.day) * DAY).toISOString().slice(0, 10);
      const s = series[d];
      if (s) s[row.category === 'emergency' ? 'emergency' : 'hazard'] += Number(row.n);
    }

    ctx.send(200, {
      region: { path: scope.orgPath, name: n.get(scope.orgPath) ?? null },
      canGoUp: scope.orgPath !== ctx.principal.user.orgPath,
      regions: [...regions.values()].sort((a, b) => a.path.localeCompare(b.path)).map((r) => ({ ...r, name: n.get(r.path) ?? null })),
      trend: Object.values(series),
    });
  });

  api.route('GET', '/api/overview/accidents.csv', { permission: 'overview.read', scope: 'org-subtree', summary: 'Accident statistics for a period as CSV (audited)', query: z.object({ region: orgPathParam, from: timeParam, to: timeParam }) }, async (ctx) => {
    const scope = regionScope(ctx);
    const q = ctx.url.searchParams;
    const to = parseTime(q.get('to'), 'to', api.clock.now());
    const from = parseTime(q.get('from'), 'from', to - 30 * DAY);
    if (from >= to) throw badRequest('bad_range', 'from 须早于 to', 'from must be before to');
    if (to - from > 400 * DAY) throw badRequest('bad_range', '时间范围不能超过 400 天', 'the range may not exceed 400 days');
    const depth = scope.orgPath.split('/').length + 1;
    const params: unknown[] = [depth, from, to];
    const r = await db.query<{ region: string; category: string; rule_id: string; title_zh: string; n: number; drills: number; acknowledged: number; resolved: number; mean_ack_s: number | null; first_ms: number; last_ms: number }>(
      `select ${childExpr('org_path', 1)} as region, category, rule_id, min(title_zh) as title_zh,
              count(*) filter (where not drill)::int as n, count(*) filter (where drill)::int as drills,
              count(*) filter (where acknowledged_at is not null and not drill)::int as acknowledged,
              count(*) filter (where state in ('resolved', 'cleared') and not drill)::int as resolved,
              avg(extract(epoch from acknowledged_at - raised_at)) filter (where acknowledged_at is not null and not drill)::float8 as mean_ack_s,
              (extract(epoch from min(raised_at)) * 1000)::float8 as first_ms, (extract(epoch from max(raised_at)) * 1000)::float8 as last_ms
         from alerts
        where raised_at >= to_timestamp($2 / 1000.0) and raised_at < to_timestamp($3 / 1000.0) and ${scopeSql(scope, 'org_path', params)}
        group by 1, 2, 3 order by 1, 2, 3`,
      params,
    );
    const n = await names([...new Set(r.rows.map((x) => x.region))]);
    const header = ['区域代码 region', '区域 name', '类别 category', '规则 rule', '名称 title', '次数 count', '演练 drills', '已确认 acknowledged', '已关闭 closed', '平均确认用时(分) mean minutes to acknowledge', '首次 first (Asia/Shanghai)', '末次 last (Asia/Shanghai)'];
    const lines = [header.map(csvCell).join(',')];
    for (const x of r.rows) {
      lines.push([
        x.region, n.get(x.region)?.zh ?? '', x.category === 'emergency' ? '应急 emergency' : '隐患 hazard', x.rule_id, x.title_zh, x.n, x.drills, x.acknowledged, x.resolved,
        x.mean_ack_s === null ? '' : (Number(x.mean_ack_s) / 60).toFixed(1), shanghaiDateTime(Number(x.first_ms)), shanghaiDateTime(Number(x.last_ms)),
      ].map(csvCell).join(','));
    }
    await audit(api, ctx, 'export.accidents', scope.orgPath, scope.orgPath, { from, to, rows: r.rows.length });
    const body = '\uFEFF' + lines.join('\r\n') + '\r\n'; // BOM so spreadsheet programs read UTF-8
    ctx.reply
      .code(200)
      .headers({
        'content-type': 'text/csv; charset=utf-8',
        'content-disposition': `attachment; filename="xiaoan-accidents-${scope.orgPath.replace(/\//g, '-')}-${shanghaiDate(from)}-${shanghaiDate(to)}.csv"`,
        'cache-control': 'no-store',
      })
      .send(body);
  });

  return [];
}
