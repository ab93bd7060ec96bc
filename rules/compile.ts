// Rule and calendar documents (YAML) → compiled rules, with every error reported at once as
// { file, rule, path, message }. Pure: takes text, returns data.
import { createHash } from 'node:crypto';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { SEVERITIES, ALERT_CATEGORIES, parseOrgPath, type Severity } from '../contract/index.ts';
import { parseClock, parseDuration, parseExpr, RuleLanguageError, type Expr } from './language.ts';
import {
  SCHEDULE_WINDOWS,
  type Action,
  type ClearCondition,
  type CompiledCalendar,
  type CompiledRule,
  type Comparison,
  type Composite,
  type Condition,
  type Override,
  type Repeat,
  type RuleError,
  type RuleSet,
  type ScheduleWindow,
} from './types.ts';

const localized = z.strictObject({ zh: z.string().min(1), en: z.string().min(1) });
const num = z.union([z.number(), z.string()]);
const durationStr = z.string({ error: 'a duration such as "10s" (ms, s, m, h, d) / 时长，如 "10s"' });
const idSchema = z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'rule id: lower case letters, digits and "-" (e.g. smoke-sustained)');

const whenSchema = z.strictObject({
  metric: z.string().optional(),
  above: num.optional(),
  below: num.optional(),
  outside: z.tuple([num, num]).optional(),
  inside: z.tuple([num, num]).optional(),
  rate: z.strictObject({ above: num.optional(), below: num.optional(), per: z.string().default('1m') }).optional(),
  for: durationStr.optional(),
  count: z.number().int().min(1).optional(),
  within: durationStr.optional(),
  event: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  where: z.record(z.string(), z.unknown()).optional(),
  absent: z
    .strictObject({ for: durationStr.optional(), factor: z.number().positive().optional(), offline: z.boolean().optional() })
    .optional(),
  composite: z
    .strictObject({
      group: z.enum(['room', 'building', 'site']),
      all: z.boolean().optional(),
      min: z.number().int().min(1).optional(),
      within: durationStr,
    })
    .optional(),
});

const clearSchema = z.strictObject({
  below: num.optional(),
  above: num.optional(),
  for: durationStr.optional(),
  event: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  quiet: durationStr.optional(),
  manual: z.boolean().optional(),
});

const actionSchema = z.union(
  [z.strictObject({ 'release-gates': z.enum(['building', 'site']) }), z.strictObject({ snapshot: z.enum(['nearest-camera', 'room-cameras']) })],
  { error: 'an action is { release-gates: building|site } or { snapshot: nearest-camera|room-cameras }; nothing may lock a door / 联动动作只能开启门禁或抓拍' },
);

const ruleSchema = z.strictObject({
  kind: z.literal('rule').optional(),
  id: idSchema,
  name: localized,
  description: localized.optional(),
  category: z.enum(ALERT_CATEGORIES),
  severity: z.enum(SEVERITIES),
  enabled: z.boolean().default(true),
  match: z
    .strictObject({
      scope: z.union([z.string(), z.array(z.string())]).optional(),
      profiles: z.array(z.string()).optional(),
      devices: z.array(z.string()).optional(),
    })
    .optional(),
  when: whenSchema,
  clear: clearSchema.optional(),
  severities: z.array(z.strictObject({ above: num.optional(), below: num.optional(), severity: z.enum(SEVERITIES) })).optional(),
  params: z.record(z.string(), z.number()).default({}),
  overrides: z
    .array(
      z.strictObject({
        scope: z.string().optional(),
        device: z.string().optional(),
        params: z.record(z.string(), z.number()),
      }),
    )
    .default([]),
  schedule: z
    .strictObject({ calendar: z.string().default('default'), during: z.array(z.string()).min(1) })
    .optional(),
  escalate: z.strictObject({ after: durationStr }).optional(),
  /** re-arm the rule's latch this long after its last trigger (default 10m for rules only a person closes) */
  rearm: z.strictObject({ after: durationStr }).optional(),
  actions: z.array(actionSchema).default([]),
});

const dateRe = /^\d{4}-\d{2}-\d{2}$/;
const calendarSchema = z.strictObject({
  kind: z.literal('calendar'),
  id: idSchema,
  scope: z.string().optional(),
  timezone: z.literal('Asia/Shanghai').default('Asia/Shanghai'),
  lessons: z.array(z.string()).min(1),
  weekends: z.array(z.enum(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])).default(['sat', 'sun']),
  terms: z.array(z.strictObject({ from: z.string().regex(dateRe), to: z.string().regex(dateRe) })).default([]),
  holidays: z.array(z.string()).default([]),
  workdays: z.array(z.string().regex(dateRe)).default([]),
});

const WEEKDAY = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 } as const;

function pathOf(p: readonly PropertyKey[]): string {
  return p.map((x) => (typeof x === 'number' ? `[${x}]` : String(x))).join('.').replace(/\.\[/g, '[') || '(root)';
}

/** A scope written in a rule: '37', '3701', '370102', an org path, or a 10-digit school id. */
export function normaliseScope(text: string): { orgPath: string | null; schoolId: string | null; depth: number } {
  const t = text.trim();
  if (/^\d{10}$/.test(t)) return { orgPath: null, schoolId: t, depth: 4 };
  if (/^\d{2}$/.test(t)) return { orgPath: t, schoolId: null, depth: 1 };
  if (/^\d{4}$/.test(t)) {
    parseOrgPath(`${t.slice(0, 2)}/${t}`);
    return { orgPath: `${t.slice(0, 2)}/${t}`, schoolId: null, depth: 2 };
  }
  if (/^\d{6}$/.test(t)) {
    const p = `${t.slice(0, 2)}/${t.slice(0, 4)}/${t}`;
    parseOrgPath(p);
    return { orgPath: p, schoolId: null, depth: 3 };
  }
  const ref = parseOrgPath(t);
  return { orgPath: t, schoolId: null, depth: t.split('/').length + (ref.level === 'college' ? 1 : 0) };
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

/** Compiled documents by (file, text): reloads of thousands of unchanged rules cost nothing. */
const docCache = new Map<string, { rules: CompiledRule[]; calendars: CompiledCalendar[]; errors: RuleError[] }>();

export function compileRules(docs: { file: string; text: string }[]): RuleSet {
  const out: RuleSet = { rules: [], calendars: [], errors: [] };
  const seen = new Map<string, string>();
  for (const { file, text } of docs) {
    const cacheKey = file + '\u0000' + text;
    let one = docCache.get(cacheKey);
    if (!one) {
      one = compileDocument(file, text);
      if (docCache.size > 50_000) docCache.clear();
      docCache.set(cacheKey, one);
    }
    out.errors.push(...one.errors);
    out.calendars.push(...one.calendars);
    for (const rule of one.rules) {
      const prior = seen.get(rule.id);
      if (prior) {
        out.errors.push({ file, rule: rule.id, path: 'id', message: `rule id "${rule.id}" is already defined in ${prior} / 规则编号重复` });
        continue;
      }
      seen.set(rule.id, file);
      out.rules.push(rule);
    }
  }
  finish(out);
  return out;
}

function compileDocument(file: string, text: string): { rules: CompiledRule[]; calendars: CompiledCalendar[]; errors: RuleError[] } {
  const out = { rules: [] as CompiledRule[], calendars: [] as CompiledCalendar[], errors: [] as RuleError[] };
  const seen = new Map<string, string>();
  {
    let parsed;
    try {
      parsed = parseAllDocuments(text);
    } catch (e) {
      out.errors.push({ file, rule: null, path: '(root)', message: `YAML: ${(e as Error).message}` });
      return out;
    }
    const list = (Array.isArray(parsed) ? parsed : [parsed]).filter((d): d is NonNullable<typeof d> => !!d);
    let docIndex = 0;
    for (const doc of list) {
      docIndex++;
      if (doc.errors.length) {
        for (const err of doc.errors) out.errors.push({ file, rule: null, path: `(document ${docIndex})`, message: `YAML: ${err.message}` });
        continue;
      }
      const value = doc.toJS() as unknown;
      if (value === null || value === undefined) continue;
      const items: unknown[] =
        value && typeof value === 'object' && !Array.isArray(value) && 'rules' in value && Array.isArray((value as { rules: unknown }).rules)
          ? (value as { rules: unknown[] }).rules
          : Array.isArray(value)
            ? value
            : [value];
      for (const item of items) {
        const src = items.length === 1 && list.length === 1 ? text : JSON.stringify(item);
        if (item && typeof item === 'object' && (item as { kind?: unknown }).kind === 'calendar') {
          const cal = compileCalendar(file, item, out.errors);
          if (cal) out.calendars.push(cal);
          continue;
        }
        const rule = compileRule(file, item, src, out.errors);
        if (!rule) continue;
        const prior = seen.get(rule.id);
        if (prior) {
          out.errors.push({ file, rule: rule.id, path: 'id', message: `rule id "${rule.id}" is already defined in ${prior} / 规则编号重复` });
          continue;
        }
        seen.set(rule.id, file);
        out.rules.push(rule);
      }
    }
  }
  return out;
}

function finish(out: RuleSet): void {
  // schedules must name a calendar that exists (or the built-in default)
  const calendarIds = new Set(['default', ...out.calendars.map((c) => c.id)]);
  for (const r of out.rules) {
    if (r.schedule && !calendarIds.has(r.schedule.calendar)) {
      out.errors.push({ file: r.file, rule: r.id, path: 'schedule.calendar', message: `calendar "${r.schedule.calendar}" is not defined; known: ${[...calendarIds].join(', ')} / 未定义的校历` });
    }
  }
  if (out.errors.length) {
    const bad = new Set(out.errors.map((e) => e.rule));
    out.rules = out.rules.filter((r) => !bad.has(r.id));
  }
}

function compileCalendar(file: string, item: unknown, errors: RuleError[]): CompiledCalendar | null {
  const r = calendarSchema.safeParse(item);
  const id = typeof (item as { id?: unknown })?.id === 'string' ? (item as { id: string }).id : null;
  if (!r.success) {
    for (const i of r.error.issues) errors.push({ file, rule: id, path: pathOf(i.path), message: i.message });
    return null;
  }
  const c = r.data;
  const errs: RuleError[] = [];
  const at = (path: string, f: () => void) => {
    try {
      f();
    } catch (e) {
      errs.push({ file, rule: c.id, path, message: (e as Error).message });
    }
  };
  const lessons: { from: number; to: number }[] = [];
  c.lessons.forEach((l, i) =>
    at(`lessons[${i}]`, () => {
      const [a, b] = l.split('-');
      if (!a || !b) throw new RuleLanguageError(`lesson "${l}" must be HH:MM-HH:MM`);
      const from = parseClock(a);
      const to = parseClock(b);
      if (to <= from) throw new RuleLanguageError(`lesson "${l}" ends before it starts`);
      lessons.push({ from, to });
    }),
  );
  const holidays: { from: string; to: string }[] = [];
  c.holidays.forEach((h, i) =>
    at(`holidays[${i}]`, () => {
      const [a, b] = h.split('..');
      if (!a || !dateRe.test(a) || (b !== undefined && !dateRe.test(b))) throw new RuleLanguageError(`holiday "${h}" must be YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD`);
      holidays.push({ from: a, to: b ?? a });
    }),
  );
  let orgPath: string | null = null;
  if (c.scope) at('scope', () => (orgPath = normaliseScope(c.scope!).orgPath));
  errors.push(...errs);
  if (errs.length) return null;
  return {
    id: c.id,
    file,
    orgPath,
    lessons,
    weekends: c.weekends.map((d) => WEEKDAY[d]),
    terms: c.terms,
    holidays,
    workdays: c.workdays,
  };
}

function compileRule(file: string, item: unknown, source: string, errors: RuleError[]): CompiledRule | null {
  const id = typeof (item as { id?: unknown })?.id === 'string' ? (item as { id: string }).id : null;
  const r = ruleSchema.safeParse(item);
  if (!r.success) {
    for (const i of r.error.issues) errors.push({ file, rule: id, path: pathOf(i.path), message: i.message });
    return null;
  }
  const d = r.data;
  const errs: RuleError[] = [];
  const err = (path: string, message: string) => errs.push({ file, rule: d.id, path, message });
  const at = <T>(path: string, f: () => T): T | undefined => {
    try {
      return f();
    } catch (e) {
      err(path, (e as Error).message);
      return undefined;
    }
  };
  const expr = (path: string, v: unknown): Expr | undefined => at(path, () => parseExpr(v));
  const dur = (path: string, v: string | undefined): number | undefined => (v === undefined ? undefined : at(path, () => parseDuration(v)));

  const w = d.when;
  const repeat = (): Repeat | undefined => {
    if (w.count === undefined && w.within === undefined) return undefined;
    if (w.count === undefined || w.within === undefined) {
      err(w.count === undefined ? 'when.count' : 'when.within', 'a repeating condition needs both count and within (e.g. count: 3, within: 10m) / 重复条件须同时给出 count 与 within');
      return undefined;
    }
    const withinMs = dur('when.within', w.within);
    return withinMs === undefined ? undefined : { count: w.count, withinMs };
  };
  const compare = (path: string, above: unknown, below: unknown): Comparison | undefined => {
    if (above !== undefined && below !== undefined) {
      err(path, 'give either above or below, not both (for a band use outside/inside) / above 与 below 只能二选一');
      return undefined;
    }
    if (above !== undefined) {
      const e = expr(`${path}.above`, above);
      return e && { op: 'above', value: e };
    }
    if (below !== undefined) {
      const e = expr(`${path}.below`, below);
      return e && { op: 'below', value: e };
    }
    return undefined;
  };

  // ---- the condition ----
  let when: Condition | undefined;
  const kinds = [
    w.absent !== undefined && 'absent',
    w.event !== undefined && 'event',
    w.rate !== undefined && 'rate',
    (w.outside !== undefined || w.inside !== undefined) && 'range',
    (w.above !== undefined || w.below !== undefined) && 'threshold',
  ].filter(Boolean) as string[];
  if (kinds.length === 0) {
    err('when', 'say what to watch: above/below, outside/inside, rate, event or absent / 须给出条件');
  } else if (kinds.length > 1) {
    err('when', `one condition per rule, found ${kinds.join(' and ')} (use composite or two rules) / 每条规则只能有一个条件`);
  } else {
    const kind = kinds[0];
    const forMs = dur('when.for', w.for) ?? 0;
    const needMetric = kind === 'threshold' || kind === 'range' || kind === 'rate';
    if (needMetric && !w.metric) err('when.metric', 'a metric condition needs metric (e.g. smoke_density) / 须给出测点 metric');
    if (!needMetric && w.metric) err('when.metric', `metric does not apply to an ${kind} condition / ${kind} 条件不需要 metric`);
    if (kind === 'threshold') {
      const c = compare('when', w.above, w.below);
      if (c && w.metric) when = { kind: 'threshold', metric: w.metric, compare: c, forMs, repeat: repeat() };
    } else if (kind === 'range') {
      if (w.outside && w.inside) err('when', 'give outside or inside, not both / outside 与 inside 只能二选一');
      const pair = (w.outside ?? w.inside)!;
      const key = w.outside ? 'outside' : 'inside';
      const low = expr(`when.${key}[0]`, pair[0]);
      const high = expr(`when.${key}[1]`, pair[1]);
      if (low && high && w.metric) when = { kind: 'range', metric: w.metric, mode: key, low, high, forMs, repeat: repeat() };
    } else if (kind === 'rate') {
      const c = compare('when.rate', w.rate!.above, w.rate!.below);
      if (!c) err('when.rate', 'rate needs above or below (change per `per`, e.g. { above: 5, per: 1m }) / 变化率须给出 above 或 below');
      const perMs = dur('when.rate.per', w.rate!.per);
      if (c && perMs && w.metric) when = { kind: 'rate', metric: w.metric, compare: c, perMs, forMs, repeat: repeat() };
    } else if (kind === 'event') {
      const types = Array.isArray(w.event) ? w.event : [w.event!];
      types.forEach((t, i) => {
        if (!/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/.test(t)) err(`when.event${Array.isArray(w.event) ? `[${i}]` : ''}`, `event type "${t}" must be dotted lower case, e.g. gate.forced_open`);
      });
      if (w.for) err('when.for', 'an event has no duration; use count/within to ask for repeats / 事件条件不支持 for');
      when = { kind: 'event', types, where: w.where ?? {}, repeat: repeat() };
    } else if (kind === 'absent') {
      const a = w.absent!;
      if (w.for) err('when.for', 'write the silence inside absent: { for: 5m } / 请写在 absent.for 中');
      when = { kind: 'absence', forMs: dur('when.absent.for', a.for) ?? null, factor: a.factor ?? 3, offline: a.offline ?? true };
      if (w.count !== undefined || w.within !== undefined) err('when.count', 'absence does not repeat / 缺失条件不支持重复');
    }
  }

  // ---- composite ----
  let composite: Composite | null = null;
  if (w.composite) {
    if (when?.kind === 'absence') err('when.composite', 'composite applies to metric and event conditions / 组合条件不适用于缺失条件');
    if (w.composite.all && w.composite.min) err('when.composite', 'give all: true or min: N, not both');
    const withinMs = dur('when.composite.within', w.composite.within);
    if (withinMs !== undefined) composite = { group: w.composite.group, min: w.composite.all ? null : (w.composite.min ?? 2), withinMs };
  }

  // ---- clear ----
  let clear: ClearCondition = { kind: 'manual' };
  const c = d.clear;
  if (when?.kind === 'absence') {
    clear = { kind: 'data' };
    if (c && (c.below !== undefined || c.above !== undefined || c.event !== undefined)) err('clear', 'an absence alert clears when data arrives again; remove clear / 缺失告警在数据恢复时自动清除');
  } else if (when?.kind === 'event') {
    if (c && (c.below !== undefined || c.above !== undefined)) err('clear', 'an event rule clears on an event or after quiet time (clear: { event: gate.closed } or { quiet: 5m })');
    if (c && !c.manual && (c.event !== undefined || c.quiet !== undefined)) {
      clear = { kind: 'event', types: c.event === undefined ? [] : Array.isArray(c.event) ? c.event : [c.event], quietMs: dur('clear.quiet', c.quiet) ?? null };
    }
  } else if (when) {
    if (c?.event !== undefined || c?.quiet !== undefined) err('clear', 'a metric rule clears on a value (clear: { below: …, for: … }) / 测点规则按数值清除');
    if (c?.manual) clear = { kind: 'manual' };
    else {
      const cmp = c ? compare('clear', c.above, c.below) : undefined;
      clear = { kind: 'value', compare: cmp ?? null, forMs: dur('clear.for', c?.for) ?? 0 };
      // hysteresis must point the right way
      if (cmp && when.kind === 'threshold' && cmp.op === when.compare.op) {
        err(`clear.${cmp.op}`, `clear must be the opposite side of the alarm (alarm ${when.compare.op}, clear ${cmp.op === 'above' ? 'below' : 'above'}) / 清除条件方向应与告警相反`);
      }
    }
  }

  // ---- severities by value (a worse reading raises severity) ----
  const levels: { compare: Comparison; severity: Severity }[] = [];
  (d.severities ?? []).forEach((l, i) => {
    const cmp = compare(`severities[${i}]`, l.above, l.below);
    if (!cmp) err(`severities[${i}]`, 'each level needs above or below');
    else levels.push({ compare: cmp, severity: l.severity });
  });
  if (levels.length && (when?.kind === 'event' || when?.kind === 'absence')) err('severities', 'value levels apply to metric rules only / 分级仅适用于测点规则');

  // ---- params: every ${name} used must have a default ----
  const used = new Set<string>();
  const collect = (e?: Expr) => e?.params.forEach((p) => used.add(p));
  if (when && 'compare' in when) collect(when.compare.value);
  if (when?.kind === 'range') (collect(when.low), collect(when.high));
  if (clear.kind === 'value' && clear.compare) collect(clear.compare.value);
  levels.forEach((l) => collect(l.compare.value));
  for (const p of used) if (!(p in d.params)) err('params', `parameter "${p}" is used but has no default in params / 参数 ${p} 缺少默认值`);

  // ---- overrides ----
  const overrides: Override[] = [];
  d.overrides.forEach((o, i) => {
    if (!!o.scope === !!o.device) return err(`overrides[${i}]`, 'an override names a scope or a device (one of them) / 覆盖须指定 scope 或 device');
    for (const k of Object.keys(o.params)) if (!(k in d.params)) err(`overrides[${i}].params.${k}`, `"${k}" is not a parameter of this rule (known: ${Object.keys(d.params).join(', ') || 'none'})`);
    if (o.device) overrides.push({ orgPath: null, schoolId: null, device: o.device, params: o.params, depth: 10 });
    else at(`overrides[${i}].scope`, () => {
      const s = normaliseScope(o.scope!);
      overrides.push({ ...s, device: null, params: o.params });
    });
  });
  overrides.sort((a, b) => a.depth - b.depth);

  // ---- match ----
  const scopes: string[] = [];
  const ms = d.match?.scope === undefined ? [] : Array.isArray(d.match.scope) ? d.match.scope : [d.match.scope];
  ms.forEach((s, i) => at(`match.scope${Array.isArray(d.match?.scope) ? `[${i}]` : ''}`, () => {
    const n = normaliseScope(s);
    if (!n.orgPath) throw new RuleLanguageError('match.scope takes region codes or org paths, not a bare school id; write the school\'s org path');
    scopes.push(n.orgPath);
  }));

  // ---- schedule ----
  let schedule = null as CompiledRule['schedule'];
  if (d.schedule) {
    const during: ScheduleWindow[] = [];
    d.schedule.during.forEach((x, i) => {
      if ((SCHEDULE_WINDOWS as readonly string[]).includes(x)) during.push(x as ScheduleWindow);
      else err(`schedule.during[${i}]`, `"${x}" is not a calendar window; use ${SCHEDULE_WINDOWS.join(', ')}`);
    });
    schedule = { calendar: d.schedule.calendar, during };
  }

  // ---- actions: emergencies only; nothing locks ----
  const actions: Action[] = [];
  d.actions.forEach((a) => {
    if ('release-gates' in a) actions.push({ kind: 'release-gates', target: a['release-gates'] });
    else actions.push({ kind: 'snapshot', target: a.snapshot });
  });
  if (actions.length && d.category !== 'emergency') err('actions', 'only emergency rules may carry linkage actions / 仅应急类规则可配置联动');
  checkNoLock(item, err);

  const escalateAfterMs = d.escalate ? (dur('escalate.after', d.escalate.after) ?? null) : d.category === 'emergency' ? 120_000 : 1_800_000;

  const rearmAfterMs = d.rearm ? (dur('rearm.after', d.rearm.after) ?? null) : null;

  errors.push(...errs);
  if (errs.length || !when) return null;
  return {
    id: d.id,
    version: hash(source),
    file,
    name: d.name,
    description: d.description ?? null,
    category: d.category,
    severity: d.severity,
    enabled: d.enabled,
    when,
    clear,
    composite,
    levels,
    params: d.params,
    overrides,
    match: { scopes, profiles: d.match?.profiles ?? [], devices: d.match?.devices ?? [] },
    schedule,
    escalateAfterMs,
    rearmAfterMs,
    actions,
    source,
  };
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
