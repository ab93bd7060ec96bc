// The rule engine: pure and incremental. It takes readings, events and clock ticks (time is
// always passed in) and returns alert transitions. Its state is plain JSON, kept per site, so
// the alerting tier can save it with the alerts and restore it after a restart.
import { severityRank, type DeviceEvent, type Reading, type Severity } from '../contract/index.ts';
import { ARMED, DEFAULT_REARM_MS, holdDue, isLatched, isOpenLatch, stepLatch, type Latch, type LatchEvent, type LatchRule, type LatchState } from './alert-state.ts';
import { calendarWindows, pickCalendar } from './calendar.ts';
import type { Params } from './language.ts';
import type {
  AlertTransition,
  CompiledCalendar,
  CompiledRule,
  Comparison,
  DeviceInfo,
  EngineResult,
  EvalContext,
  TransitionKind,
} from './types.ts';

/** State of one rule on one device (or one group of devices). Short keys: it is saved often. */
export interface KeyState {
  /** site org path */
  o: string;
  g: string;
  d: string;
  /** latch state (alert-state.ts); absent = armed. Old snapshots carry `a: 1` = raised. */
  ls?: Exclude<LatchState, 'armed'>;
  /** latch: time of the last trigger (the re-arm hold counts from it) */
  lx?: number;
  /** legacy (before the latch table): alert open */
  a?: 1;
  sev?: Severity;
  /** condition true since (pending duration) */
  p?: number | null;
  /** clear condition true since */
  c?: number | null;
  /** last value and its time */
  lv?: number;
  lt?: number;
  /** previous instantaneous condition (edge detection for repeats) */
  pc?: 1;
  /** rising edges / matching events within the repeat window */
  h?: number[];
  /** last matching event */
  le?: number;
  /** raised during a drill */
  dr?: 1;
  /** composite: member device → time its condition last held */
  m?: Record<string, number>;
  /** composite: devices of the group seen by this rule */
  k?: string[];
}

export interface EngineSnapshot {
  v: 1;
  states: Record<string, KeyState>;
  /** last data per `gateway/device` (absence rules) */
  seen: Record<string, { o: string; t: number }>;
}

export interface RuleEngine {
  onReading(r: Reading, ctx: EvalContext): EngineResult;
  onEvent(e: DeviceEvent, ctx: EvalContext): EngineResult;
  /** time-based progress: durations reached without new data, quiet clears, silent devices */
  onTick(now: number, devices?: readonly DeviceInfo[], drillDevices?: ReadonlySet<string>): EngineResult;
  /** state of one site (or all when omitted), JSON-safe */
  snapshot(site?: string): EngineSnapshot;
  /** the same as JSON text (what is stored), without the intermediate copy */
  snapshotJson(site: string): string;
  /** merge saved state (e.g. per site from the database) */
  restore(snapshot: EngineSnapshot): void;
  /** sites whose state changed since the last call */
  takeDirtySites(): string[];
  /** hot reload: state of rules that keep their id is kept */
  setRules(rules: readonly CompiledRule[], calendars?: readonly CompiledCalendar[]): void;
  rules(): readonly CompiledRule[];
  /** is the latch of this key holding off new alerts (raised, acknowledged, or resolved awaiting its clear)? */
  isOpen(key: string): boolean;
  /** the latch of one key (armed when unknown) */
  latch(key: string): Latch;
  /**
   * The desk acknowledged or resolved the alert of `key`: step its latch (a resolve re-arms a rule
   * that never clears by itself). Returns the site whose state changed (to be saved), or null.
   */
  person(key: string, event: 'ack' | 'resolve', at: number): string | null;
  /**
   * After a restore: the alerts open in the store, by key. A latch that believes its alert open when
   * the store has none (resolved elsewhere, or by a version that kept no latch) is resolved here.
   */
  reconcile(open: ReadonlyMap<string, 'raised' | 'acknowledged'>): string[];
}

export interface EngineOptions {
  state?: EngineSnapshot | EngineSnapshot[];
  calendars?: readonly CompiledCalendar[];
}

type Index = {
  byMetric: Map<string, { all: CompiledRule[]; byScope: Map<string, CompiledRule[]> }>;
  byEvent: Map<string, CompiledRule[]>;
  clearByEvent: Map<string, CompiledRule[]>;
  absence: CompiledRule[];
  byId: Map<string, CompiledRule>;
};

function buildIndex(rules: readonly CompiledRule[]): Index {
  const idx: Index = { byMetric: new Map(), byEvent: new Map(), clearByEvent: new Map(), absence: [], byId: new Map() };
  const push = <K>(m: Map<K, CompiledRule[]>, k: K, r: CompiledRule) => {
    const l = m.get(k);
    if (l) l.push(r);
    else m.set(k, [r]);
  };
  for (const r of rules) {
    if (!r.enabled) continue;
    idx.byId.set(r.id, r);
    const w = r.when;
    if (w.kind === 'threshold' || w.kind === 'range' || w.kind === 'rate') {
      let e = idx.byMetric.get(w.metric);
      if (!e) idx.byMetric.set(w.metric, (e = { all: [], byScope: new Map() }));
      if (r.match.scopes.length === 0) e.all.push(r);
      else for (const s of r.match.scopes) push(e.byScope, s, r);
    } else if (w.kind === 'event') {
      for (const t of w.types) push(idx.byEvent, t, r);
      if (r.clear.kind === 'event') for (const t of r.clear.types) push(idx.clearByEvent, t, r);
    } else idx.absence.push(r);
  }
  return idx;
}

const cmp = (c: Comparison, v: number, p: Params) => (c.op === 'above' ? v > c.value.eval(p) : v < c.value.eval(p));

function selects(r: CompiledRule, orgPath: string, gatewayId: string, deviceId: string, profile?: string | null): boolean {
  const m = r.match;
  if (m.scopes.length && !m.scopes.some((s) => orgPath === s || orgPath.startsWith(s + '/'))) return false;
  if (m.profiles.length && !(profile && m.profiles.includes(profile))) return false;
  if (m.devices.length && !m.devices.includes(deviceId) && !m.devices.includes(`${gatewayId}/${deviceId}`)) return false;
  return true;
}

/** Parameters after overrides: province default → city → county → school → device. */
export function resolveParams(r: CompiledRule, orgPath: string, gatewayId: string, deviceId: string): Params {
  if (r.overrides.length === 0) return r.params;
  let out: Record<string, number> | null = null;
  for (const o of r.overrides) {
    const applies = o.device
      ? o.device === deviceId || o.device === `${gatewayId}/${deviceId}`
      : o.schoolId
        ? orgPath.endsWith('/' + o.schoolId)
        : orgPath === o.orgPath || orgPath.startsWith(o.orgPath + '/');
    if (applies) out = { ...(out ?? r.params), ...o.params };
  }
  return out ?? r.params;
}

const fmt = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toPrecision(3)).toString());
const secs = (ms: number) => (ms % 60_000 === 0 && ms > 0 ? `${ms / 60_000}m` : `${ms / 1000}s`);

/** How the latch table applies to a rule. */
export function latchRuleOf(r: CompiledRule): LatchRule {
  return { kind: r.when.kind === 'event' ? 'discrete' : 'continuous', rearmAfterMs: r.rearmAfterMs ?? (r.clear.kind === 'manual' ? DEFAULT_REARM_MS : null) };
}
const latchOf = (st: KeyState): Latch => (st.ls ? { state: st.ls, since: st.lx ?? null } : st.a ? { state: 'raised', since: st.lx ?? null } : ARMED);
function setLatch(st: KeyState, l: Latch): void {
  delete st.a;
  if (l.state === 'armed') {
    delete st.ls;
    delete st.lx;
  } else {
    st.ls = l.state;
    if (l.since !== null) st.lx = l.since;
    else delete st.lx;
  }
}
const latched = (st: KeyState | undefined): boolean => !!st && isLatched(latchOf(st));

export function createRuleEngine(rules: readonly CompiledRule[], opts: EngineOptions = {}): RuleEngine {
  let idx = buildIndex(rules);
  let allRules: readonly CompiledRule[] = rules;
  let calendars: readonly CompiledCalendar[] = opts.calendars ?? [];
  const states = new Map<string, KeyState>();
  /** keys per site, so saving one site's state does not walk every site's */
  const bySite = new Map<string, Set<string>>();
  const seen = new Map<string, { o: string; t: number }>();
  const seenBySite = new Map<string, Set<string>>();
  const index = (m: Map<string, Set<string>>, site: string, key: string) => {
    let set = m.get(site);
    if (!set) m.set(site, (set = new Set()));
    set.add(key);
  };
  /** keys that need attention on ticks (pending durations, clears, quiet windows) */
  const timed = new Set<string>();
  const dirty = new Set<string>();
  const paramCache = new Map<string, Params>();
  const ancestorCache = new Map<string, string[]>();
  const ancestors = (orgPath: string): string[] => {
    let a = ancestorCache.get(orgPath);
    if (!a) {
      a = [];
      for (let p = orgPath; ; ) {
        a.push(p);
        const i = p.lastIndexOf('/');
        if (i < 0) break;
        p = p.slice(0, i);
      }
      if (ancestorCache.size > 100_000) ancestorCache.clear();
      ancestorCache.set(orgPath, a);
    }
    return a;
  };

  const restore = (s: EngineSnapshot) => {
    if (!s || s.v !== 1) return;
    for (const [k, st] of Object.entries(s.states ?? {})) {
      states.set(k, st);
      index(bySite, st.o, k);
      if (st.a && !st.ls) setLatch(st, latchOf(st));
      if (st.p != null || st.c != null || latched(st)) timed.add(k);
    }
    for (const [k, v] of Object.entries(s.seen ?? {})) {
      const cur = seen.get(k);
      if (!cur || cur.t < v.t) {
        seen.set(k, v);
        index(seenBySite, v.o, k);
      }
    }
  };
  for (const s of Array.isArray(opts.state) ? opts.state : opts.state ? [opts.state] : []) restore(s);

  const params = (r: CompiledRule, o: string, g: string, d: string): Params => {
    if (r.overrides.length === 0) return r.params;
    const ck = `${r.id}|${o}|${g}|${d}`;
    let p = paramCache.get(ck);
    if (!p) {
      p = resolveParams(r, o, g, d);
      if (paramCache.size > 200_000) paramCache.clear();
      paramCache.set(ck, p);
    }
    return p;
  };

  const inSchedule = (r: CompiledRule, orgPath: string, ts: number) => {
    if (!r.schedule) return true;
    const w = calendarWindows(pickCalendar(calendars, r.schedule.calendar, orgPath), ts);
    return r.schedule.during.some((x) => w.has(x));
  };

  const state = (key: string, o: string, g: string, d: string): KeyState => {
    let st = states.get(key);
    if (!st) {
      states.set(key, (st = { o, g, d }));
      index(bySite, o, key);
    }
    return st;
  };

  const transition = (
    out: AlertTransition[],
    kind: TransitionKind,
    r: CompiledRule,
    key: string,
    st: KeyState,
    deviceId: string,
    at: number,
    value: number | null,
    eventType: string | null,
    drill: boolean,
    reason: { zh: string; en: string },
  ) => {
    out.push({
      kind,
      key,
      ruleId: r.id,
      ruleVersion: r.version,
      title: r.name,
      category: r.category,
      severity: st.sev ?? r.severity,
      gatewayId: st.g,
      deviceId,
      orgPath: st.o,
      value,
      eventType,
      at,
      drill,
      actions: r.actions,
      escalateAfterMs: r.escalateAfterMs,
      reason,
    });
  };

  const severityFor = (r: CompiledRule, v: number | null, p: Params): Severity => {
    let s = r.severity;
    if (v === null) return s;
    for (const l of r.levels) if (cmp(l.compare, v, p) && severityRank(l.severity) > severityRank(s)) s = l.severity;
    return s;
  };

  /** Step the latch of `key`; keeps the tick set in step with it. */
  const step = (r: CompiledRule, key: string, st: KeyState, event: LatchEvent, at: number) => {
    const { latch, effect } = stepLatch(latchRuleOf(r), latchOf(st), event, at);
    setLatch(st, latch);
    if (isLatched(latch)) timed.add(key);
    dirty.add(st.o);
    return effect;
  };

  /** The rule's condition holds: the latch table says whether that raises, re-raises or is absorbed. */
  const raise = (out: AlertTransition[], r: CompiledRule, key: string, st: KeyState, deviceId: string, at: number, value: number | null, eventType: string | null, drill: boolean, p: Params, reason: { zh: string; en: string }) => {
    const effect = step(r, key, st, 'trigger', at);
    if (effect === 'raise') {
      st.c = null;
      st.sev = severityFor(r, value, p);
      if (drill) st.dr = 1;
      else delete st.dr;
      transition(out, 'raised', r, key, st, deviceId, at, value, eventType, drill, reason);
    } else if (effect === 'retrigger') {
      transition(out, 'retriggered', r, key, st, deviceId, at, value, eventType, drill, reason);
    }
  };

  const clearKey = (out: AlertTransition[], r: CompiledRule, key: string, st: KeyState, at: number, value: number | null, reason: { zh: string; en: string }) => {
    const effect = step(r, key, st, 'clear', at);
    if (effect === 'cleared') transition(out, 'cleared', r, key, st, st.d, at, value, null, !!st.dr, reason);
    if (latched(st)) return; // a rule that does not clear by itself ignores clears
    delete st.sev;
    delete st.dr;
    st.p = null;
    st.c = null;
    delete st.h;
    if (st.m) st.m = {};
  };

  /** Instantaneous condition of a metric rule on a value (rate rules use the previous value). */
  const metricCondition = (r: CompiledRule, st: KeyState, value: number, ts: number, p: Params): { cond: boolean; shown: number } => {
    const w = r.when;
    if (w.kind === 'threshold') return { cond: cmp(w.compare, value, p), shown: value };
    if (w.kind === 'range') {
      const lo = w.low.eval(p);
      const hi = w.high.eval(p);
      const inside = value >= lo && value <= hi;
      return { cond: w.mode === 'inside' ? inside : !inside, shown: value };
    }
    if (w.kind === 'rate') {
      if (st.lt === undefined || st.lv === undefined || ts <= st.lt) return { cond: false, shown: 0 };
      const rate = ((value - st.lv) / (ts - st.lt)) * w.perMs;
      return { cond: cmp(w.compare, rate, p), shown: rate };
    }
    return { cond: false, shown: value };
  };

  const describe = (r: CompiledRule, shown: number, p: Params): { zh: string; en: string } => {
    const w = r.when;
    if (w.kind === 'threshold') {
      const t = fmt(w.compare.value.eval(p));
      const dur = w.forMs ? ` for ${secs(w.forMs)}` : '';
      return {
        zh: `${w.metric} ${fmt(shown)} ${w.compare.op === 'above' ? '高于' : '低于'} ${t}${w.forMs ? `，持续 ${secs(w.forMs)}` : ''}`,
        en: `${w.metric} ${fmt(shown)} ${w.compare.op} ${t}${dur}`,
      };
    }
    if (w.kind === 'range') {
      const lo = fmt(w.low.eval(p));
      const hi = fmt(w.high.eval(p));
      return { zh: `${w.metric} ${fmt(shown)} ${w.mode === 'outside' ? '超出' : '处于'} [${lo}, ${hi}]`, en: `${w.metric} ${fmt(shown)} ${w.mode} [${lo}, ${hi}]` };
    }
    if (w.kind === 'rate') return { zh: `${w.metric} 变化率 ${fmt(shown)}/${secs(w.perMs)}`, en: `${w.metric} changing ${fmt(shown)} per ${secs(w.perMs)}` };
    return { zh: r.name.zh, en: r.name.en };
  };

  /** composite: does the group now hold? */
  const groupHolds = (r: CompiledRule, gs: KeyState, now: number): boolean => {
    const c = r.composite!;
    const m = gs.m ?? {};
    let n = 0;
    for (const t of Object.values(m)) if (now - t <= c.withinMs) n++;
    const need = c.min ?? Math.max(1, gs.k?.length ?? 1);
    return n >= need;
  };

  const groupOf = (r: CompiledRule, ctx: EvalContext, deviceId: string): string => {
    const g = r.composite!.group;
    const dev = ctx.device;
    if (g === 'room') return `room:${dev?.building ?? ''}/${dev?.room ?? deviceId}`;
    if (g === 'building') return `building:${dev?.building ?? deviceId}`;
    return 'site';
  };

  /** feed a member signal into the composite group of `r` */
  const composite = (out: AlertTransition[], r: CompiledRule, ctx: EvalContext, deviceId: string, holds: boolean, ts: number, value: number | null, eventType: string | null, drill: boolean, p: Params, reason: { zh: string; en: string }) => {
    const gkey = `${r.id}|${ctx.gatewayId}|${groupOf(r, ctx, deviceId)}`;
    const gs = state(gkey, ctx.orgPath, ctx.gatewayId, deviceId);
    gs.k ??= [];
    if (!gs.k.includes(deviceId)) gs.k.push(deviceId);
    gs.m ??= {};
    if (holds) gs.m[deviceId] = ts;
    else delete gs.m[deviceId];
    dirty.add(ctx.orgPath);
    const ok = groupHolds(r, gs, ts);
    // armed and holding: raise; an event group holding again while raised: the latch table says (retrigger)
    if (ok && (!latched(gs) || latchRuleOf(r).kind === 'discrete')) {
      gs.d = deviceId;
      gs.c = null;
      const n = Object.keys(gs.m).length;
      raise(out, r, gkey, gs, deviceId, ts, value, eventType, drill, p, {
        zh: `${reason.zh}（同${r.composite!.group === 'room' ? '房间' : r.composite!.group === 'building' ? '楼宇' : '校区'} ${n} 个设备）`,
        en: `${reason.en} (${n} devices in the same ${r.composite!.group})`,
      });
    } else if (!ok && latched(gs)) {
      gs.c ??= ts;
      timed.add(gkey);
      const forMs = r.clear.kind === 'value' ? r.clear.forMs : 0;
      if (ts - gs.c >= forMs) clearKey(out, r, gkey, gs, ts, value, { zh: '组合条件不再满足', en: 'composite condition no longer holds' });
    } else if (ok) gs.c = null;
  };

  const evalReading = (out: AlertTransition[], r: CompiledRule, rd: Reading, ctx: EvalContext) => {
    const key = `${r.id}|${ctx.gatewayId}|${rd.device}`;
    const st = state(key, ctx.orgPath, ctx.gatewayId, rd.device);
    const p = params(r, ctx.orgPath, ctx.gatewayId, rd.device);
    const w = r.when as Extract<CompiledRule['when'], { forMs: number }>;
    const { cond: raw, shown } = metricCondition(r, st, rd.value, rd.ts, p);
    const cond = raw && inSchedule(r, ctx.orgPath, rd.ts);
    st.lv = rd.value;
    st.lt = rd.ts;
    dirty.add(ctx.orgPath);
    // sustained for a duration
    let holds: boolean;
    if (cond) {
      st.p ??= rd.ts;
      holds = rd.ts - st.p >= w.forMs;
      if (!holds) timed.add(key);
    } else {
      st.p = null;
      holds = false;
    }
    // repeating: rising edges within a window
    const rising = cond && !st.pc;
    if (cond) st.pc = 1;
    else delete st.pc;
    if (w.repeat) {
      if (rising) (st.h ??= []).push(rd.ts);
      if (st.h) st.h = st.h.filter((t) => rd.ts - t <= w.repeat!.withinMs);
      holds = (st.h?.length ?? 0) >= w.repeat.count;
    }
    const drill = !!ctx.drill;
    if (r.composite) return composite(out, r, ctx, rd.device, holds, rd.ts, rd.value, null, drill, p, describe(r, shown, p));
    if (!latched(st)) {
      if (holds) {
        const reason = describe(r, shown, p);
        raise(out, r, key, st, rd.device, rd.ts, rd.value, null, drill, p, w.repeat ? { zh: `${reason.zh}，${w.repeat.count} 次/${secs(w.repeat.withinMs)}`, en: `${reason.en}, ${w.repeat.count} times within ${secs(w.repeat.withinMs)}` } : reason);
      }
      return;
    }
    // open: hysteretic clear, or a worse reading raises the severity
    const clearing = r.clear.kind === 'value' ? (r.clear.compare ? cmp(r.clear.compare, rd.value, p) : !raw) : false;
    if (clearing) {
      st.c ??= rd.ts;
      timed.add(key);
      if (rd.ts - st.c >= (r.clear as { forMs: number }).forMs) clearKey(out, r, key, st, rd.ts, rd.value, { zh: `${r.when.kind === 'rate' ? '变化率' : '数值'}恢复正常`, en: 'back to normal' });
      return;
    }
    st.c = null;
    if (raw) {
      const sev = severityFor(r, rd.value, p);
      if (severityRank(sev) > severityRank(st.sev ?? r.severity)) {
        st.sev = sev;
        transition(out, 'worsened', r, key, st, rd.device, rd.ts, rd.value, null, !!st.dr, describe(r, shown, p));
      }
    }
  };

  const matchesWhere = (where: Record<string, unknown>, data: Record<string, unknown>) => {
    for (const [k, v] of Object.entries(where)) if (data[k] !== v) return false;
    return true;
  };

  const noteSeen = (ctx: EvalContext, device: string, ts: number) => {
    const k = ctx.gatewayId + '/' + device;
    const cur = seen.get(k);
    if (!cur) {
      seen.set(k, { o: ctx.orgPath, t: ts });
      index(seenBySite, ctx.orgPath, k);
      dirty.add(ctx.orgPath);
    } else if (cur.t < ts) {
      cur.t = ts;
      dirty.add(ctx.orgPath);
    }
  };

  /** data arrived from a device: absence alerts on it clear */
  const dataArrived = (out: AlertTransition[], ctx: EvalContext, device: string, ts: number) => {
    noteSeen(ctx, device, ts);
    for (const r of idx.absence) {
      const key = `${r.id}|${ctx.gatewayId}|${device}`;
      const st = states.get(key);
      if (latched(st)) clearKey(out, r, key, st!, ts, null, { zh: '设备恢复上报', en: 'device reporting again' });
    }
  };

  /** each rule evaluation is its own fault unit (no closures here: this runs for every reading) */
  function evalGuarded(res: EngineResult, r: CompiledRule, rd: Reading, ctx: EvalContext) {
    if (!selects(r, ctx.orgPath, ctx.gatewayId, rd.device, ctx.device?.profile)) return;
    try {
      evalReading(res.transitions, r, rd, ctx);
    } catch (e) {
      res.faults.push({ ruleId: r.id, message: (e as Error).message });
    }
  }

  const guard = (faults: EngineResult['faults'], r: CompiledRule, f: () => void) => {
    try {
      f();
    } catch (e) {
      faults.push({ ruleId: r.id, message: (e as Error).message });
    }
  };


  function collect(site: string | undefined): EngineSnapshot {
    const out: EngineSnapshot = { v: 1, states: {}, seen: {} };
    if (site === undefined) {
      for (const [k, st] of states) out.states[k] = st;
      for (const [k, v] of seen) out.seen[k] = v;
    } else {
      for (const k of bySite.get(site) ?? []) {
        const st = states.get(k);
        if (st) out.states[k] = st;
      }
      for (const k of seenBySite.get(site) ?? []) {
        const v = seen.get(k);
        if (v) out.seen[k] = v;
      }
    }
    return out;
  }

  const engine: RuleEngine = {
    onReading(rd, ctx) {
      const res: EngineResult = { transitions: [], faults: [] };
      dataArrived(res.transitions, ctx, rd.device, rd.ts);
      const e = idx.byMetric.get(rd.metric);
      if (!e) return res;
      for (const r of e.all) evalGuarded(res, r, rd, ctx);
      if (e.byScope.size) {
        // rules scoped to the site's org path or any ancestor
        for (const path of ancestors(ctx.orgPath)) {
          const l = e.byScope.get(path);
          if (l) for (const r of l) evalGuarded(res, r, rd, ctx);
        }
      }
      return res;
    },

    onEvent(ev, ctx) {
      const res: EngineResult = { transitions: [], faults: [] };
      if (ev.type !== 'device.offline') dataArrived(res.transitions, ctx, ev.device, ev.ts);
      const drill = !!ctx.drill || ev.drill;
      for (const r of idx.byEvent.get(ev.type) ?? []) {
        guard(res.faults, r, () => {
          if (!selects(r, ctx.orgPath, ctx.gatewayId, ev.device, ctx.device?.profile)) return;
          const w = r.when as Extract<CompiledRule['when'], { kind: 'event' }>;
          if (!matchesWhere(w.where, ev.data) || !inSchedule(r, ctx.orgPath, ev.ts)) return;
          const key = `${r.id}|${ctx.gatewayId}|${ev.device}`;
          const st = state(key, ctx.orgPath, ctx.gatewayId, ev.device);
          st.le = ev.ts;
          dirty.add(ctx.orgPath);
          let holds = true;
          if (w.repeat) {
            st.h = [...(st.h ?? []), ev.ts].filter((t) => ev.ts - t <= w.repeat!.withinMs);
            holds = st.h.length >= w.repeat.count;
          }
          const p = params(r, ctx.orgPath, ctx.gatewayId, ev.device);
          const reason = { zh: `事件 ${ev.type}${w.repeat ? `，${w.repeat.count} 次/${secs(w.repeat.withinMs)}` : ''}`, en: `event ${ev.type}${w.repeat ? `, ${w.repeat.count} times within ${secs(w.repeat.withinMs)}` : ''}` };
          if (r.composite) return composite(res.transitions, r, ctx, ev.device, holds, ev.ts, null, ev.type, drill, p, reason);
          if (!holds) return;
          raise(res.transitions, r, key, st, ev.device, ev.ts, null, ev.type, drill, p, reason);
        });
      }
      for (const r of idx.clearByEvent.get(ev.type) ?? []) {
        guard(res.faults, r, () => {
          const key = `${r.id}|${ctx.gatewayId}|${ev.device}`;
          const st = states.get(key);
          if (latched(st)) clearKey(res.transitions, r, key, st!, ev.ts, null, { zh: `事件 ${ev.type}`, en: `event ${ev.type}` });
        });
      }
      return res;
    },

    onTick(now, devices = [], drillDevices) {
      const res: EngineResult = { transitions: [], faults: [] };
      // durations reached and clears completed without new data
      for (const key of [...timed]) {
        const st = states.get(key);
        const r = idx.byId.get(key.slice(0, key.indexOf('|')));
        if (!st || !r) {
          timed.delete(key);
          continue;
        }
        guard(res.faults, r, () => {
          const w = r.when;
          const lr = latchRuleOf(r);
          if (holdDue(lr, latchOf(st), now) && stepLatch(lr, latchOf(st), 'hold', now).latch.state !== latchOf(st).state) {
            step(r, key, st, 'hold', now);
            if (!latched(st)) clearKey(res.transitions, r, key, st, now, null, { zh: '', en: '' }); // re-armed: no transition, fresh counts
          }
          if (r.composite) {
            if (latched(st) && !groupHolds(r, st, now)) {
              st.c ??= now;
              const forMs = r.clear.kind === 'value' ? r.clear.forMs : r.clear.kind === 'event' ? (r.clear.quietMs ?? 0) : 0;
              if (now - st.c >= forMs) clearKey(res.transitions, r, key, st, now, null, { zh: '组合条件不再满足', en: 'composite condition no longer holds' });
            }
            if (!latched(st)) timed.delete(key);
            return;
          }
          if (w.kind === 'event') {
            if (latched(st) && r.clear.kind === 'event' && r.clear.quietMs !== null && st.le !== undefined && now - st.le >= r.clear.quietMs) {
              clearKey(res.transitions, r, key, st, now, null, { zh: `${secs(r.clear.quietMs)} 内无新事件`, en: `quiet for ${secs(r.clear.quietMs)}` });
            }
            if (!latched(st)) timed.delete(key);
            return;
          }
          if (w.kind === 'absence') {
            if (!latched(st)) timed.delete(key);
            return;
          }
          const p = params(r, st.o, st.g, st.d);
          if (!latched(st)) {
            if (st.p == null || st.lv === undefined) return void timed.delete(key);
            if (w.kind === 'rate' || w.repeat) return void timed.delete(key);
            const { cond } = metricCondition(r, st, st.lv, st.lt ?? now, p);
            if (!cond) return void ((st.p = null), timed.delete(key));
            if (now - st.p >= w.forMs && inSchedule(r, st.o, now)) {
              raise(res.transitions, r, key, st, st.d, now, st.lv, null, !!drillDevices?.has(`${st.g}/${st.d}`), p, describe(r, st.lv, p));
            }
            return;
          }
          if (st.c != null && r.clear.kind === 'value' && now - st.c >= r.clear.forMs) {
            clearKey(res.transitions, r, key, st, now, st.lv ?? null, { zh: '数值恢复正常', en: 'back to normal' });
            timed.delete(key);
          }
        });
      }
      // silent and offline devices
      if (idx.absence.length) {
        for (const dev of devices) {
          const sk = `${dev.gatewayId}/${dev.deviceId}`;
          const mine = seen.get(sk)?.t ?? null;
          const last = Math.max(dev.lastSeen ?? -Infinity, mine ?? -Infinity);
          for (const r of idx.absence) {
            guard(res.faults, r, () => {
              if (!selects(r, dev.orgPath, dev.gatewayId, dev.deviceId, dev.profile)) return;
              const w = r.when as Extract<CompiledRule['when'], { kind: 'absence' }>;
              const key = `${r.id}|${dev.gatewayId}|${dev.deviceId}`;
              const limit = w.forMs ?? (dev.expectedIntervalMs ? dev.expectedIntervalMs * w.factor : null);
              const offline = w.offline && dev.state === 'offline';
              // to clear, data must really be recent; to raise, silence counts only since watching began
              const silentFor = Number.isFinite(last) ? now - last : null;
              const silent = offline || (limit !== null && silentFor !== null && silentFor > limit);
              const since = Math.max(last, dev.watchedSince ?? -Infinity);
              const unheardFor = Number.isFinite(since) ? now - since : null;
              const raiseNow = offline || (limit !== null && unheardFor !== null && unheardFor > limit);
              const st = states.get(key);
              if (raiseNow && !latched(st)) {
                if (!inSchedule(r, dev.orgPath, now)) return;
                const s = state(key, dev.orgPath, dev.gatewayId, dev.deviceId);
                const p = params(r, dev.orgPath, dev.gatewayId, dev.deviceId);
                raise(res.transitions, r, key, s, dev.deviceId, now, null, offline ? 'device.offline' : null, !!drillDevices?.has(`${dev.gatewayId}/${dev.deviceId}`), p,
                  offline
                    ? { zh: '设备离线', en: 'device offline' }
                    : { zh: `设备已 ${secs(Math.round(unheardFor! / 1000) * 1000)} 无数据（应每 ${secs(dev.expectedIntervalMs ?? limit!)} 上报）`, en: `no data for ${secs(Math.round(unheardFor! / 1000) * 1000)} (expected every ${secs(dev.expectedIntervalMs ?? limit!)})` });
              } else if (!silent && !raiseNow && latched(st)) {
                clearKey(res.transitions, r, key, st!, now, null, { zh: '设备恢复上报', en: 'device reporting again' });
              }
            });
          }
        }
      }
      return res;
    },

    snapshotJson(site) {
      return JSON.stringify(collect(site));
    },

    snapshot(site) {
      return JSON.parse(JSON.stringify(collect(site))) as EngineSnapshot;
    },


    restore,

    takeDirtySites() {
      const l = [...dirty];
      dirty.clear();
      return l;
    },

    setRules(next, cals) {
      allRules = next;
      idx = buildIndex(next);
      if (cals) calendars = cals;
      paramCache.clear();
      for (const [k, st] of states) if (st.p != null || st.c != null || latched(st)) timed.add(k);
    },

    rules: () => allRules,

    isOpen: (key) => latched(states.get(key)),

    latch: (key) => {
      const st = states.get(key);
      return st ? latchOf(st) : ARMED;
    },

    person(key, event, at) {
      const st = states.get(key);
      const r = idx.byId.get(key.slice(0, key.indexOf('|')));
      if (!st || !r || !latched(st)) return null;
      step(r, key, st, event, at);
      if (!latched(st)) clearKey([], r, key, st, at, null, { zh: '', en: '' }); // re-armed: forget counts and pending durations
      return st.o;
    },

    reconcile(open) {
      const changed = new Set<string>();
      for (const [key, st] of states) {
        const l = latchOf(st);
        if (!isOpenLatch(l)) continue;
        const inStore = open.get(key);
        const event = inStore === undefined ? 'resolve' : inStore === 'acknowledged' && l.state === 'raised' ? 'ack' : null;
        if (event && engine.person(key, event, l.since ?? 0)) changed.add(st.o);
      }
      return [...changed];
    },
  };
  return engine;
}
