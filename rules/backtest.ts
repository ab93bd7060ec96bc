// Backtest: replay stored history through a rule and list the alerts it would have raised, for
// one parameter value or a sweep of them. Pure: the caller reads the history.
import type { DeviceEvent, Reading, Severity } from '../contract/index.ts';
import { createRuleEngine } from './engine.ts';
import { RuleLanguageError } from './language.ts';
import type { CompiledCalendar, CompiledRule, DeviceInfo, EvalContext } from './types.ts';

export type BacktestRecord =
  | { kind: 'reading'; gatewayId: string; orgPath: string; reading: Reading; device?: DeviceInfo }
  | { kind: 'event'; gatewayId: string; orgPath: string; event: DeviceEvent; device?: DeviceInfo };

export interface BacktestAlert {
  gatewayId: string;
  deviceId: string;
  orgPath: string;
  severity: Severity;
  raisedAt: number;
  clearedAt: number | null;
  value: number | null;
  eventType: string | null;
  reason: string;
}

export interface BacktestResult {
  ruleId: string;
  param: string | null;
  value: number | null;
  alerts: BacktestAlert[];
  records: number;
}

export interface Sweep {
  param: string;
  values: number[];
}

/** "threshold=0.10..0.30:0.02" → { param: 'threshold', values: [0.1, 0.12, …, 0.3] } */
export function parseSweep(text: string): Sweep {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)=(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?):(\d+(?:\.\d+)?)$/.exec(text.trim());
  if (!m) throw new RuleLanguageError(`sweep "${text}" must look like threshold=0.10..0.30:0.02 (param=from..to:step) / 扫描参数格式有误`);
  const [from, to, step] = [Number(m[2]), Number(m[3]), Number(m[4])];
  if (step <= 0) throw new RuleLanguageError(`sweep step must be above 0 (got ${m[4]})`);
  if (to < from) throw new RuleLanguageError(`sweep goes from ${from} to ${to}: "to" must not be below "from"`);
  const decimals = Math.max(...[m[2]!, m[3]!, m[4]!].map((s) => (s.split('.')[1] ?? '').length));
  const n = Math.floor((to - from) / step + 1e-9);
  if (n > 1000) throw new RuleLanguageError(`sweep has ${n + 1} values; at most 1001`);
  const values: number[] = [];
  for (let i = 0; i <= n; i++) values.push(Number((from + i * step).toFixed(decimals)));
  return { param: m[1]!, values };
}

/** The rule with parameters set everywhere (overrides of those parameters dropped). */
export function withParams(rule: CompiledRule, params: Record<string, number>): CompiledRule {
  for (const k of Object.keys(params)) {
    if (!(k in rule.params)) throw new RuleLanguageError(`rule ${rule.id} has no parameter "${k}" (known: ${Object.keys(rule.params).join(', ') || 'none'})`);
  }
  const strip = (p: Record<string, number>) => Object.fromEntries(Object.entries(p).filter(([k]) => !(k in params)));
  return {
    ...rule,
    params: { ...rule.params, ...params },
    overrides: rule.overrides.map((o) => ({ ...o, params: strip(o.params) })),
    // backtests never act
    actions: [],
  };
}

/**
 * Replays `records` (sorted by time) through the rule once per sweep value. Time advances with
 * the records; ticks run every `tickMs` of record time so durations and silences complete.
 */
export function backtest(
  rule: CompiledRule,
  records: readonly BacktestRecord[],
  opts: { sweep?: Sweep; tickMs?: number; devices?: readonly DeviceInfo[]; calendars?: readonly CompiledCalendar[]; until?: number } = {},
): BacktestResult[] {
  const runs: { param: string | null; value: number | null; rule: CompiledRule }[] = opts.sweep
    ? opts.sweep.values.map((v) => ({ param: opts.sweep!.param, value: v, rule: withParams(rule, { [opts.sweep!.param]: v }) }))
    : [{ param: null, value: null, rule: withParams(rule, {}) }];
  const tickMs = opts.tickMs ?? 1000;
  return runs.map(({ param, value, rule: r }) => {
    const engine = createRuleEngine([{ ...r, enabled: true }], { calendars: opts.calendars, seqGuard: false });
    const open = new Map<string, BacktestAlert>();
    const alerts: BacktestAlert[] = [];
    const apply = (ts: ReturnType<typeof engine.onTick>) => {
      for (const t of ts.transitions) {
        if (t.kind === 'raised') {
          const a: BacktestAlert = { gatewayId: t.gatewayId, deviceId: t.deviceId, orgPath: t.orgPath, severity: t.severity, raisedAt: t.at, clearedAt: null, value: t.value, eventType: t.eventType, reason: t.reason.en };
          open.set(t.key, a);
          alerts.push(a);
        } else if (t.kind === 'retriggered') {
          continue; // the same alert, still open
        } else if (t.kind === 'worsened') {
          const a = open.get(t.key);
          if (a) a.severity = t.severity;
        } else {
          const a = open.get(t.key);
          if (a) a.clearedAt = t.at;
          open.delete(t.key);
        }
      }
    };
    let nextTick: number | null = null;
    const tickUntil = (ts: number) => {
      if (nextTick === null) nextTick = ts;
      while (nextTick <= ts) {
        apply(engine.onTick(nextTick, opts.devices));
        nextTick += tickMs;
      }
    };
    for (const rec of records) {
      const ts = rec.kind === 'reading' ? rec.reading.ts : rec.event.ts;
      tickUntil(ts);
      const ctx: EvalContext = { gatewayId: rec.gatewayId, orgPath: rec.orgPath, device: rec.device };
      apply(rec.kind === 'reading' ? engine.onReading(rec.reading, ctx) : engine.onEvent(rec.event, ctx));
    }
    if (opts.until !== undefined) tickUntil(opts.until);
    return { ruleId: rule.id, param, value, alerts, records: records.length };
  });
}
