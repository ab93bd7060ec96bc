// The rule engine: pure and incremental. It takes readings, events and clock ticks (time is
// always passed in) and returns alert transitions. Its state is plain JSON, kept per site, so
// the alerting tier can save it with the alerts and restore it after a restart.
//
// This file only composes the units, each with one job:
//   rule-index.ts     which rules a record can concern        overrides.ts   parameters after overrides
//   key-store.ts      per-site state, snapshot and restore    schedule.ts    calendar windows of a rule
//   seq-guard.ts      records already evaluated (redelivery)  latch-driver.ts  the latch (alert-state.ts) → transitions
//   conditions/metric.ts, event.ts, composite.ts, absence.ts: the condition evaluators
import type { DeviceEvent, Reading } from '../contract/index.ts';
import { ARMED, isOpenLatch, type Latch } from './alert-state.ts';
import { dataArrived, tickAbsence } from './conditions/absence.ts';
import { tickComposite } from './conditions/composite.ts';
import { clearByEvent, evalEvent, tickEvent } from './conditions/event.ts';
import { evalMetricReading, tickMetric } from './conditions/metric.ts';
import type { EngineCore } from './core.ts';
import { latched, latchOf, ruleIdOf, type KeyState } from './key-state.ts';
import { KeyStore, type EngineSnapshot } from './key-store.ts';
import { LatchDriver } from './latch-driver.ts';
import { ParamCache } from './overrides.ts';
import { AncestorPaths, buildIndex, selects } from './rule-index.ts';
import { RuleSchedule } from './schedule.ts';
import { DEFAULT_SEQ_HORIZON_MS, SeqGuard } from './seq-guard.ts';
import type { CompiledCalendar, CompiledRule, DeviceInfo, EngineResult, EvalContext } from './types.ts';

export { latchRuleOf, type KeyState } from './key-state.ts';
export { resolveParams } from './overrides.ts';
export type { EngineSnapshot } from './key-store.ts';

export interface RuleEngine {
  /** A reading whose seq is at or below the highest already evaluated for its (gateway, device, metric) is ignored. */
  onReading(r: Reading, ctx: EvalContext): EngineResult;
  /** An event whose seq is at or below the highest already evaluated for its (gateway, device, type) is ignored. */
  onEvent(e: DeviceEvent, ctx: EvalContext): EngineResult;
  /** time-based progress: durations reached without new data, quiet clears, silent devices */
  onTick(now: number, devices?: readonly DeviceInfo[], drillDevices?: ReadonlySet<string>): EngineResult;
  /** state of one site (or all when omitted), JSON-safe; includes the seq guard's marks */
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
  /**
   * The per-series seq guard (seq-guard.ts). `horizonMs`: a series without records for this long
   * is forgotten (default 7 days). false: evaluate every record (backtests replay history).
   */
  seqGuard?: false | { horizonMs?: number };
}

const emptyResult = (): EngineResult => ({ transitions: [], faults: [] });

/** Each rule evaluation is its own fault unit: it fails alone, named by its rule. */
function guarded(res: EngineResult, r: CompiledRule, f: () => void): void {
  try {
    f();
  } catch (e) {
    res.faults.push({ ruleId: r.id, message: (e as Error).message });
  }
}

/** The hot path: one reading, one metric rule (no closure built per call). */
function evalReadingGuarded(core: EngineCore, res: EngineResult, r: CompiledRule, rd: Reading, ctx: EvalContext): void {
  if (!selects(r, ctx.orgPath, ctx.gatewayId, rd.device, ctx.device?.profile)) return;
  try {
    evalMetricReading(core, res.transitions, r, rd, ctx);
  } catch (e) {
    res.faults.push({ ruleId: r.id, message: (e as Error).message });
  }
}

/** Time-based progress of one key: the re-arm hold, then its condition's own timing. Returns whether it still needs ticks. */
function tickKey(core: EngineCore, res: EngineResult, r: CompiledRule, key: string, st: KeyState, now: number, drillDevices?: ReadonlySet<string>): boolean {
  core.latches.hold(r, key, st, now);
  if (r.composite) return tickComposite(core, res.transitions, r, key, st, now);
  if (r.when.kind === 'event') return tickEvent(core, res.transitions, r, key, st, now);
  if (r.when.kind === 'absence') return latched(st);
  return tickMetric(core, res.transitions, r, key, st, now, drillDevices);
}

/** The engine: routes each record to the rules it concerns, in its own fault unit, and owns nothing else. */
class Engine implements RuleEngine {
  private readonly store: KeyStore;
  private readonly core: EngineCore;
  private readonly ancestors = new AncestorPaths();
  private readonly useGuard: boolean;
  private allRules: readonly CompiledRule[];

  constructor(rules: readonly CompiledRule[], opts: EngineOptions) {
    this.useGuard = opts.seqGuard !== false;
    this.store = new KeyStore(new SeqGuard((opts.seqGuard || undefined)?.horizonMs ?? DEFAULT_SEQ_HORIZON_MS));
    this.core = { store: this.store, latches: new LatchDriver(this.store), params: new ParamCache(), schedule: new RuleSchedule(opts.calendars ?? []), idx: buildIndex(rules) };
    this.allRules = rules;
    for (const s of Array.isArray(opts.state) ? opts.state : opts.state ? [opts.state] : []) this.store.restore(s);
  }

  /** seq guard: is this record new for its series? (marks the site changed when so) */
  private admit(ctx: EvalContext, device: string, kind: 'r' | 'e', name: string, seq: number | undefined, ts: number): boolean {
    if (!this.useGuard || seq === undefined || seq === null) return true;
    if (!this.store.guard.admit(ctx.gatewayId, ctx.orgPath, device, kind, name, seq, ts)) return false;
    this.store.touch(ctx.orgPath);
    return true;
  }

  onReading(rd: Reading, ctx: EvalContext): EngineResult {
    const res = emptyResult();
    if (!this.admit(ctx, rd.device, 'r', rd.metric, rd.seq, rd.ts)) return res;
    const core = this.core;
    this.store.noteSeen(ctx.orgPath, ctx.gatewayId, rd.device, rd.ts);
    dataArrived(core, res.transitions, ctx.gatewayId, rd.device, rd.ts);
    const e = core.idx.byMetric.get(rd.metric);
    if (!e) return res;
    for (const r of e.all) evalReadingGuarded(core, res, r, rd, ctx);
    if (e.byScope.size) {
      // rules scoped to the site's org path or any ancestor
      for (const path of this.ancestors.of(ctx.orgPath)) {
        const l = e.byScope.get(path);
        if (l) for (const r of l) evalReadingGuarded(core, res, r, rd, ctx);
      }
    }
    return res;
  }

  onEvent(ev: DeviceEvent, ctx: EvalContext): EngineResult {
    const res = emptyResult();
    if (!this.admit(ctx, ev.device, 'e', ev.type, ev.seq, ev.ts)) return res;
    const core = this.core;
    if (ev.type !== 'device.offline') {
      this.store.noteSeen(ctx.orgPath, ctx.gatewayId, ev.device, ev.ts);
      dataArrived(core, res.transitions, ctx.gatewayId, ev.device, ev.ts);
    }
    const drill = !!ctx.drill || ev.drill;
    for (const r of core.idx.byEvent.get(ev.type) ?? []) guarded(res, r, () => evalEvent(core, res.transitions, r, ev, ctx, drill));
    for (const r of core.idx.clearByEvent.get(ev.type) ?? []) guarded(res, r, () => clearByEvent(core, res.transitions, r, ev, ctx));
    return res;
  }

  onTick(now: number, devices: readonly DeviceInfo[] = [], drillDevices?: ReadonlySet<string>): EngineResult {
    const res = emptyResult();
    const { core, store } = this;
    for (const key of [...store.timed]) {
      const st = store.get(key);
      const r = core.idx.byId.get(ruleIdOf(key));
      if (!st || !r) {
        store.timed.delete(key);
        continue;
      }
      guarded(res, r, () => void (tickKey(core, res, r, key, st, now, drillDevices) || store.timed.delete(key)));
    }
    // silent and offline devices
    if (core.idx.absence.length) {
      for (const dev of devices) {
        const sk = `${dev.gatewayId}/${dev.deviceId}`;
        const last = Math.max(dev.lastSeen ?? -Infinity, store.seen.get(sk)?.t ?? -Infinity);
        const drill = !!drillDevices?.has(sk);
        for (const r of core.idx.absence) guarded(res, r, () => tickAbsence(core, res.transitions, r, dev, last, now, drill));
      }
    }
    for (const site of store.guard.sweep(now)) store.touch(site);
    return res;
  }

  snapshotJson(site: string): string {
    return JSON.stringify(this.store.collect(site));
  }
  snapshot(site?: string): EngineSnapshot {
    return JSON.parse(JSON.stringify(this.store.collect(site))) as EngineSnapshot;
  }
  restore(s: EngineSnapshot): void {
    this.store.restore(s);
  }
  takeDirtySites(): string[] {
    return this.store.takeDirty();
  }

  setRules(next: readonly CompiledRule[], cals?: readonly CompiledCalendar[]): void {
    this.allRules = next;
    this.core.idx = buildIndex(next);
    if (cals) this.core.schedule.calendars = cals;
    this.core.params.clear();
    this.store.retime();
  }
  rules(): readonly CompiledRule[] {
    return this.allRules;
  }

  isOpen(key: string): boolean {
    return latched(this.store.get(key));
  }
  latch(key: string): Latch {
    const st = this.store.get(key);
    return st ? latchOf(st) : ARMED;
  }

  person(key: string, event: 'ack' | 'resolve', at: number): string | null {
    const st = this.store.get(key);
    const r = this.core.idx.byId.get(ruleIdOf(key));
    if (!st || !r || !this.core.latches.person(r, key, st, event, at)) return null;
    return st.o;
  }

  reconcile(open: ReadonlyMap<string, 'raised' | 'acknowledged'>): string[] {
    const changed = new Set<string>();
    for (const [key, st] of this.store.states) {
      const l = latchOf(st);
      if (!isOpenLatch(l)) continue;
      const inStore = open.get(key);
      const event = inStore === undefined ? 'resolve' : inStore === 'acknowledged' && l.state === 'raised' ? 'ack' : null;
      if (event && this.person(key, event, l.since ?? 0)) changed.add(st.o);
    }
    return [...changed];
  }
}

export function createRuleEngine(rules: readonly CompiledRule[], opts: EngineOptions = {}): RuleEngine {
  return new Engine(rules, opts);
}
