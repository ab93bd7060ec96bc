// Metric conditions (threshold, range, rate) on one device: the instantaneous condition, how long
// it has held (`for`), its rising edges within a window (`count`/`within`), the hysteretic clear
// and severity levels. One call per reading and rule: keep it free of needless allocation.
import { severityRank, type Reading } from '../../contract/index.ts';
import { keyOf, type EngineCore } from '../core.ts';
import { latched, type KeyState } from '../key-state.ts';
import { compare, severityFor } from '../latch-driver.ts';
import type { Params } from '../language.ts';
import { BACK_TO_NORMAL, describeMetric, RATE_BACK_TO_NORMAL, withRepeat } from '../reasons.ts';
import type { AlertTransition, CompiledRule, EvalContext } from '../types.ts';
import { feedComposite } from './composite.ts';

type MetricWhen = Extract<CompiledRule['when'], { forMs: number }>;

/** Instantaneous condition of a metric rule on a value (rate rules use the key's previous value). */
export function metricCondition(r: CompiledRule, st: KeyState, value: number, ts: number, p: Params): { cond: boolean; shown: number } {
  const w = r.when;
  if (w.kind === 'threshold') return { cond: compare(w.compare, value, p), shown: value };
  if (w.kind === 'range') {
    const inside = value >= w.low.eval(p) && value <= w.high.eval(p);
    return { cond: w.mode === 'inside' ? inside : !inside, shown: value };
  }
  if (w.kind === 'rate') {
    if (st.lt === undefined || st.lv === undefined || ts <= st.lt) return { cond: false, shown: 0 };
    const rate = ((value - st.lv) / (ts - st.lt)) * w.perMs;
    return { cond: compare(w.compare, rate, p), shown: rate };
  }
  return { cond: false, shown: value };
}

/** advanceHold's answer, as bits (a number, not an object: this runs for every reading and rule) */
export const HOLDS = 1;
export const PENDING = 2;

/**
 * Advance the duration and repeat counters with the condition at `ts`. Returns HOLDS when the
 * rule's trigger holds now, PENDING when a duration is running (the tick completes it).
 */
export function advanceHold(w: MetricWhen, st: KeyState, cond: boolean, ts: number): number {
  let holds = false;
  let pending = false;
  if (cond) {
    st.p ??= ts;
    holds = ts - st.p >= w.forMs;
    pending = !holds;
  } else st.p = null;
  const rising = cond && !st.pc;
  if (cond) st.pc = 1;
  else delete st.pc;
  if (w.repeat) {
    if (rising) (st.h ??= []).push(ts);
    if (st.h) st.h = st.h.filter((t) => ts - t <= w.repeat!.withinMs);
    holds = (st.h?.length ?? 0) >= w.repeat.count;
  }
  return (holds ? HOLDS : 0) | (pending ? PENDING : 0);
}

/** One reading against one metric rule that selects its device. */
export function evalMetricReading(core: EngineCore, out: AlertTransition[], r: CompiledRule, rd: Reading, ctx: EvalContext): void {
  const { store } = core;
  const key = keyOf(r.id, ctx.gatewayId, rd.device);
  const st = store.ensure(key, ctx.orgPath, ctx.gatewayId, rd.device);
  const p = core.params.get(r, ctx.orgPath, ctx.gatewayId, rd.device);
  const w = r.when as MetricWhen;
  const { cond: raw, shown } = metricCondition(r, st, rd.value, rd.ts, p);
  const cond = raw && core.schedule.open(r, ctx.orgPath, rd.ts);
  st.lv = rd.value;
  st.lt = rd.ts;
  store.touch(ctx.orgPath);
  const step = advanceHold(w, st, cond, rd.ts);
  const holds = (step & HOLDS) !== 0;
  if (step & PENDING) store.timed.add(key);
  const drill = !!ctx.drill;
  if (r.composite) {
    feedComposite(core, out, r, ctx, holds, p, { deviceId: rd.device, at: rd.ts, value: rd.value, eventType: null, drill, reason: describeMetric(r, shown, p) });
    return;
  }
  if (!latched(st)) {
    if (!holds) return;
    const reason = describeMetric(r, shown, p);
    core.latches.trigger(out, r, key, st, p, { deviceId: rd.device, at: rd.ts, value: rd.value, eventType: null, drill, reason: w.repeat ? withRepeat(reason, w.repeat) : reason });
    return;
  }
  whileLatched(core, out, r, key, st, rd, raw, shown, p);
}

/** The alert is open: a hysteretic clear, or a worse reading raises the severity. */
function whileLatched(core: EngineCore, out: AlertTransition[], r: CompiledRule, key: string, st: KeyState, rd: Reading, raw: boolean, shown: number, p: Params): void {
  const clearing = r.clear.kind === 'value' ? (r.clear.compare ? compare(r.clear.compare, rd.value, p) : !raw) : false;
  if (clearing) {
    st.c ??= rd.ts;
    core.store.timed.add(key);
    if (rd.ts - st.c >= (r.clear as { forMs: number }).forMs) core.latches.clear(out, r, key, st, rd.ts, rd.value, r.when.kind === 'rate' ? RATE_BACK_TO_NORMAL : BACK_TO_NORMAL);
    return;
  }
  st.c = null;
  if (!raw) return;
  const sev = severityFor(r, rd.value, p);
  if (severityRank(sev) > severityRank(st.sev ?? r.severity)) {
    st.sev = sev;
    core.latches.emit(out, 'worsened', r, key, st, { deviceId: rd.device, at: rd.ts, value: rd.value, eventType: null, drill: !!st.dr, reason: describeMetric(r, shown, p) });
  }
}

/**
 * Time passes without data: a pending duration completes (raise), or a pending clear completes.
 * Returns whether the key still needs ticks.
 */
export function tickMetric(core: EngineCore, out: AlertTransition[], r: CompiledRule, key: string, st: KeyState, now: number, drillDevices?: ReadonlySet<string>): boolean {
  const w = r.when as MetricWhen;
  const p = core.params.get(r, st.o, st.g, st.d);
  if (!latched(st)) {
    if (st.p == null || st.lv === undefined) return false;
    if (w.kind === 'rate' || w.repeat) return false;
    const { cond } = metricCondition(r, st, st.lv, st.lt ?? now, p);
    if (!cond) {
      st.p = null;
      return false;
    }
    if (now - st.p >= w.forMs && core.schedule.open(r, st.o, now)) {
      core.latches.trigger(out, r, key, st, p, { deviceId: st.d, at: now, value: st.lv, eventType: null, drill: !!drillDevices?.has(`${st.g}/${st.d}`), reason: describeMetric(r, st.lv, p) });
    }
    return true;
  }
  if (st.c != null && r.clear.kind === 'value' && now - st.c >= r.clear.forMs) {
    core.latches.clear(out, r, key, st, now, st.lv ?? null, BACK_TO_NORMAL);
    return false;
  }
  return true;
}
