// One rule document → a compiled rule, every error collected as { file, rule, path, message }.
// Each part of the rule (condition, composite, clear, levels, parameters, overrides, match,
// schedule, actions) is compiled by its own function against a shared error collector.
import { createHash } from 'node:crypto';
import type { Severity } from '../contract/index.ts';
import { normaliseScope, pathOf, ruleSchema, type RuleDoc } from './compile-schema.ts';
import { parseDuration, parseExpr, RuleLanguageError, type Expr } from './language.ts';
import {
  SCHEDULE_WINDOWS,
  type Action,
  type ClearCondition,
  type CompiledRule,
  type Comparison,
  type Composite,
  type Condition,
  type Override,
  type Repeat,
  type RuleError,
  type ScheduleWindow,
} from './types.ts';

export function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

type Level = { compare: Comparison; severity: Severity };

/** Collects the errors of one rule and parses its pieces, each error at its path. */
class RuleErrors {
  readonly list: RuleError[] = [];
  constructor(private readonly file: string, private readonly rule: string) {}
  err(path: string, message: string): void {
    this.list.push({ file: this.file, rule: this.rule, path, message });
  }
  at<T>(path: string, f: () => T): T | undefined {
    try {
      return f();
    } catch (e) {
      this.err(path, (e as Error).message);
      return undefined;
    }
  }
  expr(path: string, v: unknown): Expr | undefined {
    return this.at(path, () => parseExpr(v));
  }
  dur(path: string, v: string | undefined): number | undefined {
    return v === undefined ? undefined : this.at(path, () => parseDuration(v));
  }
  compare(path: string, above: unknown, below: unknown): Comparison | undefined {
    if (above !== undefined && below !== undefined) {
      this.err(path, 'give either above or below, not both (for a band use outside/inside) / above 与 below 只能二选一');
      return undefined;
    }
    if (above !== undefined) {
      const e = this.expr(`${path}.above`, above);
      return e && { op: 'above', value: e };
    }
    if (below !== undefined) {
      const e = this.expr(`${path}.below`, below);
      return e && { op: 'below', value: e };
    }
    return undefined;
  }
}

type When = RuleDoc['when'];

function compileRepeat(x: RuleErrors, w: When): Repeat | undefined {
  if (w.count === undefined && w.within === undefined) return undefined;
  if (w.count === undefined || w.within === undefined) {
    x.err(w.count === undefined ? 'when.count' : 'when.within', 'a repeating condition needs both count and within (e.g. count: 3, within: 10m) / 重复条件须同时给出 count 与 within');
    return undefined;
  }
  const withinMs = x.dur('when.within', w.within);
  return withinMs === undefined ? undefined : { count: w.count, withinMs };
}

/** Exactly one kind of condition per rule. */
function conditionKind(x: RuleErrors, w: When): string | null {
  const kinds = [
    w.absent !== undefined && 'absent',
    w.event !== undefined && 'event',
    w.rate !== undefined && 'rate',
    (w.outside !== undefined || w.inside !== undefined) && 'range',
    (w.above !== undefined || w.below !== undefined) && 'threshold',
  ].filter(Boolean) as string[];
  if (kinds.length === 0) x.err('when', 'say what to watch: above/below, outside/inside, rate, event or absent / 须给出条件');
  else if (kinds.length > 1) x.err('when', `one condition per rule, found ${kinds.join(' and ')} (use composite or two rules) / 每条规则只能有一个条件`);
  return kinds.length === 1 ? kinds[0]! : null;
}

function compileMetricCondition(x: RuleErrors, w: When, kind: string, forMs: number): Condition | undefined {
  if (kind === 'threshold') {
    const c = x.compare('when', w.above, w.below);
    return c && w.metric ? { kind: 'threshold', metric: w.metric, compare: c, forMs, repeat: compileRepeat(x, w) } : undefined;
  }
  if (kind === 'range') {
    if (w.outside && w.inside) x.err('when', 'give outside or inside, not both / outside 与 inside 只能二选一');
    const pair = (w.outside ?? w.inside)!;
    const key = w.outside ? 'outside' : 'inside';
    const low = x.expr(`when.${key}[0]`, pair[0]);
    const high = x.expr(`when.${key}[1]`, pair[1]);
    return low && high && w.metric ? { kind: 'range', metric: w.metric, mode: key, low, high, forMs, repeat: compileRepeat(x, w) } : undefined;
  }
  const c = x.compare('when.rate', w.rate!.above, w.rate!.below);
  if (!c) x.err('when.rate', 'rate needs above or below (change per `per`, e.g. { above: 5, per: 1m }) / 变化率须给出 above 或 below');
  const perMs = x.dur('when.rate.per', w.rate!.per);
  return c && perMs && w.metric ? { kind: 'rate', metric: w.metric, compare: c, perMs, forMs, repeat: compileRepeat(x, w) } : undefined;
}

function compileCondition(x: RuleErrors, w: When): Condition | undefined {
  const kind = conditionKind(x, w);
  if (!kind) return undefined;
  const forMs = x.dur('when.for', w.for) ?? 0;
  const needMetric = kind === 'threshold' || kind === 'range' || kind === 'rate';
  if (needMetric && !w.metric) x.err('when.metric', 'a metric condition needs metric (e.g. smoke_density) / 须给出测点 metric');
  if (!needMetric && w.metric) x.err('when.metric', `metric does not apply to an ${kind} condition / ${kind} 条件不需要 metric`);
  if (needMetric) return compileMetricCondition(x, w, kind, forMs);
  if (kind === 'event') {
    const types = Array.isArray(w.event) ? w.event : [w.event!];
    types.forEach((t, i) => {
      if (!/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/.test(t)) x.err(`when.event${Array.isArray(w.event) ? `[${i}]` : ''}`, `event type "${t}" must be dotted lower case, e.g. gate.forced_open`);
    });
    if (w.for) x.err('when.for', 'an event has no duration; use count/within to ask for repeats / 事件条件不支持 for');
    return { kind: 'event', types, where: w.where ?? {}, repeat: compileRepeat(x, w) };
  }
  const a = w.absent!;
  if (w.for) x.err('when.for', 'write the silence inside absent: { for: 5m } / 请写在 absent.for 中');
  const when: Condition = { kind: 'absence', forMs: x.dur('when.absent.for', a.for) ?? null, factor: a.factor ?? 3, offline: a.offline ?? true };
  if (w.count !== undefined || w.within !== undefined) x.err('when.count', 'absence does not repeat / 缺失条件不支持重复');
  return when;
}

function compileComposite(x: RuleErrors, w: When, when: Condition | undefined): Composite | null {
  if (!w.composite) return null;
  if (when?.kind === 'absence') x.err('when.composite', 'composite applies to metric and event conditions / 组合条件不适用于缺失条件');
  if (w.composite.all && w.composite.min) x.err('when.composite', 'give all: true or min: N, not both');
  const withinMs = x.dur('when.composite.within', w.composite.within);
  return withinMs === undefined ? null : { group: w.composite.group, min: w.composite.all ? null : (w.composite.min ?? 2), withinMs };
}

function compileClear(x: RuleErrors, c: RuleDoc['clear'], when: Condition | undefined): ClearCondition {
  if (when?.kind === 'absence') {
    if (c && (c.below !== undefined || c.above !== undefined || c.event !== undefined)) x.err('clear', 'an absence alert clears when data arrives again; remove clear / 缺失告警在数据恢复时自动清除');
    return { kind: 'data' };
  }
  if (when?.kind === 'event') {
    if (c && (c.below !== undefined || c.above !== undefined)) x.err('clear', 'an event rule clears on an event or after quiet time (clear: { event: gate.closed } or { quiet: 5m })');
    if (c && !c.manual && (c.event !== undefined || c.quiet !== undefined)) {
      return { kind: 'event', types: c.event === undefined ? [] : Array.isArray(c.event) ? c.event : [c.event], quietMs: x.dur('clear.quiet', c.quiet) ?? null };
    }
    return { kind: 'manual' };
  }
  if (!when) return { kind: 'manual' };
  if (c?.event !== undefined || c?.quiet !== undefined) x.err('clear', 'a metric rule clears on a value (clear: { below: …, for: … }) / 测点规则按数值清除');
  if (c?.manual) return { kind: 'manual' };
  const cmp = c ? x.compare('clear', c.above, c.below) : undefined;
  const forMs = x.dur('clear.for', c?.for) ?? 0;
  // hysteresis must point the right way
  if (cmp && when.kind === 'threshold' && cmp.op === when.compare.op) {
    x.err(`clear.${cmp.op}`, `clear must be the opposite side of the alarm (alarm ${when.compare.op}, clear ${cmp.op === 'above' ? 'below' : 'above'}) / 清除条件方向应与告警相反`);
  }
  return { kind: 'value', compare: cmp ?? null, forMs };
}

/** Severities by value: a worse reading raises the severity. */
function compileLevels(x: RuleErrors, d: RuleDoc, when: Condition | undefined): Level[] {
  const levels: Level[] = [];
  (d.severities ?? []).forEach((l, i) => {
    const cmp = x.compare(`severities[${i}]`, l.above, l.below);
    if (!cmp) x.err(`severities[${i}]`, 'each level needs above or below');
    else levels.push({ compare: cmp, severity: l.severity });
  });
  if (levels.length && (when?.kind === 'event' || when?.kind === 'absence')) x.err('severities', 'value levels apply to metric rules only / 分级仅适用于测点规则');
  return levels;
}

/** Every ${name} used must have a default in params. */
function checkParams(x: RuleErrors, d: RuleDoc, when: Condition | undefined, clear: ClearCondition, levels: Level[]): void {
  const used = new Set<string>();
  const collect = (e?: Expr) => e?.params.forEach((p) => used.add(p));
  if (when && 'compare' in when) collect(when.compare.value);
  if (when?.kind === 'range') (collect(when.low), collect(when.high));
  if (clear.kind === 'value' && clear.compare) collect(clear.compare.value);
  levels.forEach((l) => collect(l.compare.value));
  for (const p of used) if (!(p in d.params)) x.err('params', `parameter "${p}" is used but has no default in params / 参数 ${p} 缺少默认值`);
}

/** Overrides, ordered province → city → county → school → device. */
function compileOverrides(x: RuleErrors, d: RuleDoc): Override[] {
  const overrides: Override[] = [];
  d.overrides.forEach((o, i) => {
    if (!!o.scope === !!o.device) return x.err(`overrides[${i}]`, 'an override names a scope or a device (one of them) / 覆盖须指定 scope 或 device');
    for (const k of Object.keys(o.params)) if (!(k in d.params)) x.err(`overrides[${i}].params.${k}`, `"${k}" is not a parameter of this rule (known: ${Object.keys(d.params).join(', ') || 'none'})`);
    if (o.device) overrides.push({ orgPath: null, schoolId: null, device: o.device, params: o.params, depth: 10 });
    else x.at(`overrides[${i}].scope`, () => overrides.push({ ...normaliseScope(o.scope!), device: null, params: o.params }));
  });
  return overrides.sort((a, b) => a.depth - b.depth);
}

function compileMatch(x: RuleErrors, d: RuleDoc): CompiledRule['match'] {
  const scopes: string[] = [];
  const ms = d.match?.scope === undefined ? [] : Array.isArray(d.match.scope) ? d.match.scope : [d.match.scope];
  ms.forEach((s, i) => x.at(`match.scope${Array.isArray(d.match?.scope) ? `[${i}]` : ''}`, () => {
    const n = normaliseScope(s);
    if (!n.orgPath) throw new RuleLanguageError('match.scope takes region codes or org paths, not a bare school id; write the school\'s org path');
    scopes.push(n.orgPath);
  }));
  return { scopes, profiles: d.match?.profiles ?? [], devices: d.match?.devices ?? [] };
}

function compileSchedule(x: RuleErrors, d: RuleDoc): CompiledRule['schedule'] {
  if (!d.schedule) return null;
  const during: ScheduleWindow[] = [];
  d.schedule.during.forEach((w, i) => {
    if ((SCHEDULE_WINDOWS as readonly string[]).includes(w)) during.push(w as ScheduleWindow);
    else x.err(`schedule.during[${i}]`, `"${w}" is not a calendar window; use ${SCHEDULE_WINDOWS.join(', ')}`);
  });
  return { calendar: d.schedule.calendar, during };
}

/** Linkage actions: emergencies only; nothing locks. */
function compileActions(x: RuleErrors, d: RuleDoc, item: unknown): Action[] {
  const actions: Action[] = d.actions.map((a) => ('release-gates' in a ? { kind: 'release-gates', target: a['release-gates'] } : { kind: 'snapshot', target: a.snapshot }));
  if (actions.length && d.category !== 'emergency') x.err('actions', 'only emergency rules may carry linkage actions / 仅应急类规则可配置联动');
  checkNoLock(item, (path, message) => x.err(path, message));
  return actions;
}

/** Belt and braces: refuse anything in the actions that mentions locking (GB 50116: linkage opens, never locks). */
function checkNoLock(item: unknown, err: (path: string, message: string) => void): void {
  const actions = (item as { actions?: unknown })?.actions;
  if (!Array.isArray(actions)) return;
  actions.forEach((a, i) => {
    if (/lock(?!-?free)|close-gates|deny/i.test(JSON.stringify(a)) && !/unlock|release/i.test(JSON.stringify(a))) {
      err(`actions[${i}]`, 'no rule may lock a door or gate; linkage only releases them (GB 50116-2013) / 联动只能开启门禁，不得锁闭');
    }
  });
}

/** One rule item; null when it has errors (pushed to `errors`). */
export function compileRule(file: string, item: unknown, source: string, errors: RuleError[]): CompiledRule | null {
  const id = typeof (item as { id?: unknown })?.id === 'string' ? (item as { id: string }).id : null;
  const r = ruleSchema.safeParse(item);
  if (!r.success) {
    for (const i of r.error.issues) errors.push({ file, rule: id, path: pathOf(i.path), message: i.message });
    return null;
  }
  const d = r.data;
  const x = new RuleErrors(file, d.id);
  const when = compileCondition(x, d.when);
  const composite = compileComposite(x, d.when, when);
  const clear = compileClear(x, d.clear, when);
  const levels = compileLevels(x, d, when);
  checkParams(x, d, when, clear, levels);
  const overrides = compileOverrides(x, d);
  const match = compileMatch(x, d);
  const schedule = compileSchedule(x, d);
  const actions = compileActions(x, d, item);
  const escalateAfterMs = d.escalate ? (x.dur('escalate.after', d.escalate.after) ?? null) : d.category === 'emergency' ? 120_000 : 1_800_000;
  const rearmAfterMs = d.rearm ? (x.dur('rearm.after', d.rearm.after) ?? null) : null;
  errors.push(...x.list);
  if (x.list.length || !when) return null;
  return {
    id: d.id, version: hash(source), file, name: d.name, description: d.description ?? null, category: d.category, severity: d.severity,
    enabled: d.enabled, when, clear, composite, levels, params: d.params, overrides, match, schedule, escalateAfterMs, rearmAfterMs, actions, source,
  };
}
