// Backtest on stored history: reads the readings and events a rule looks at (within a scope and a
// time range) and replays them through the pure backtest of rules/. Used by `xiaoan rules
// backtest` and by the dashboards' rules page.
import { backtest, parseSweep, type BacktestRecord, type BacktestResult, type CompiledCalendar, type CompiledRule, type DeviceInfo } from '../../rules/index.ts';
import type { Queryable } from '../db.ts';
import { scopeSql, type Scope } from '../scope.ts';
import { AlertError, ts } from './store.ts';

export interface BacktestRequest {
  rule: CompiledRule;
  calendars?: readonly CompiledCalendar[];
  from: number;
  to: number;
  /** "threshold=0.10..0.30:0.02" */
  sweep?: string;
  /** records read at most (default 2,000,000) */
  maxRecords?: number;
}

export async function backtestOnHistory(db: Queryable, scope: Scope, req: BacktestRequest): Promise<BacktestResult[]> {
  if (!(req.to > req.from)) throw new AlertError('backtest needs --from before --to / 起止时间有误', 'invalid');
  let sweep;
  try {
    sweep = req.sweep ? parseSweep(req.sweep) : undefined;
  } catch (e) {
    throw new AlertError((e as Error).message, 'invalid');
  }
  if (sweep && !(sweep.param in req.rule.params)) {
    throw new AlertError(`rule ${req.rule.id} has no parameter "${sweep.param}" (known: ${Object.keys(req.rule.params).join(', ') || 'none'})`, 'invalid');
  }
  const limit = req.maxRecords ?? 2_000_000;
  const w = req.rule.when;
  const records: BacktestRecord[] = [];
  const devices = new Map<string, DeviceInfo>();
  {
    const params: unknown[] = [];
    const r = await db.query<{ gateway_id: string; device_id: string; org_path: string; profile: string; building: string | null; room: string | null; expected_interval_ms: number | null }>(
      `select gateway_id, device_id, org_path, profile, building, room, expected_interval_ms from devices where ${scopeSql(scope, 'org_path', params)}`,
      params,
    );
    for (const d of r.rows) devices.set(`${d.gateway_id}/${d.device_id}`, { gatewayId: d.gateway_id, deviceId: d.device_id, orgPath: d.org_path, profile: d.profile, building: d.building, room: d.room, expectedIntervalMs: d.expected_interval_ms, state: 'online', lastSeen: null });
  }
  if (w.kind === 'threshold' || w.kind === 'range' || w.kind === 'rate' || w.kind === 'absence') {
    const params: unknown[] = [req.from, req.to];
    const metric = w.kind === 'absence' ? '' : (params.push(w.metric), `and r.metric = $${params.length}`);
    params.push(limit + 1);
    const lim = params.length;
    const r = await db.query<{ gateway_id: string; org_path: string; seq: number; device_id: string; metric: string; ts: number; value: number; quality: 'good' | 'uncertain' | 'bad' }>(
      `select r.gateway_id, g.org_path, r.seq::float8 as seq, r.device_id, r.metric, (extract(epoch from r.ts) * 1000)::float8 as ts, r.value, r.quality
         from readings r join gateways g on g.id = r.gateway_id
        where r.ts >= ${ts(1)} and r.ts < ${ts(2)} ${metric} and ${scopeSql(scope, 'g.org_path', params)}
        order by r.ts, r.seq limit $${lim}`,
      params,
    );
    if (r.rows.length > limit) throw new AlertError(`more than ${limit} readings in the range; narrow --from/--to or the scope / 数据量过大`, 'invalid');
    for (const x of r.rows) {
      records.push({ kind: 'reading', gatewayId: x.gateway_id, orgPath: x.org_path, device: devices.get(`${x.gateway_id}/${x.device_id}`), reading: { seq: Number(x.seq), device: x.device_id, metric: x.metric, ts: Math.round(Number(x.ts)), value: Number(x.value), quality: x.quality } });
    }
  }
  const eventTypes = w.kind === 'event' ? [...w.types, ...(req.rule.clear.kind === 'event' ? req.rule.clear.types : [])] : w.kind === 'absence' ? null : [];
  if (eventTypes === null || eventTypes.length) {
    const params: unknown[] = [req.from, req.to];
    const filter = eventTypes ? (params.push(eventTypes), `and e.type = any($${params.length}::text[])`) : '';
    params.push(limit + 1);
    const lim = params.length;
    const r = await db.query<{ gateway_id: string; org_path: string; seq: number; device_id: string; type: string; ts: number; priority: 'alarm' | 'normal'; drill: boolean; data: Record<string, unknown> }>(
      `select e.gateway_id, g.org_path, e.seq::float8 as seq, e.device_id, e.type, (extract(epoch from e.ts) * 1000)::float8 as ts, e.priority, e.drill, e.data
         from events e join gateways g on g.id = e.gateway_id
        where e.ts >= ${ts(1)} and e.ts < ${ts(2)} ${filter} and ${scopeSql(scope, 'g.org_path', params)}
        order by e.ts, e.seq limit $${lim}`,
      params,
    );
    if (r.rows.length > limit) throw new AlertError(`more than ${limit} events in the range; narrow it / 数据量过大`, 'invalid');
    for (const x of r.rows) {
      records.push({ kind: 'event', gatewayId: x.gateway_id, orgPath: x.org_path, device: devices.get(`${x.gateway_id}/${x.device_id}`), event: { seq: Number(x.seq), device: x.device_id, type: x.type, ts: Math.round(Number(x.ts)), priority: x.priority, drill: x.drill, data: typeof x.data === 'string' ? JSON.parse(x.data) : x.data } });
    }
  }
  const at = (x: BacktestRecord) => (x.kind === 'reading' ? x.reading.ts : x.event.ts);
  records.sort((a, b) => at(a) - at(b));
  return backtest(req.rule, records, {
    sweep,
    calendars: req.calendars,
    devices: w.kind === 'absence' ? [...devices.values()] : undefined,
    until: req.to,
    tickMs: w.kind === 'absence' ? 10_000 : 1000,
  });
}

/** The sweep as lines a person reads: one line per value, then each alert. */
export function formatBacktest(results: BacktestResult[], opts: { details?: boolean } = {}): string[] {
  const lines: string[] = [];
  const iso = (t: number) => new Date(t).toISOString();
  for (const r of results) {
    const head = r.param ? `${r.param}=${r.value}` : 'as written / 按现有参数';
    lines.push(`${r.ruleId}  ${head.padEnd(18)}  alerts ${String(r.alerts.length).padStart(4)}  (${r.records} records)`);
    if (opts.details !== false) {
      for (const a of r.alerts) lines.push(`    ${iso(a.raisedAt)}  ${a.gatewayId}/${a.deviceId}  ${a.severity}  ${a.clearedAt ? `cleared ${iso(a.clearedAt)}` : 'open'}  ${a.reason}`);
    }
  }
  return lines;
}
