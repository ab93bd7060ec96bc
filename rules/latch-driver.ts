// Drives the alert latch (alert-state.ts) of a key and turns its effects into alert transitions:
// a trigger that raises or retriggers, a clear, a person's ack or resolve, the re-arm hold.
// Keeps the tick set and the dirty sites in step with every latch it moves.
import { severityRank, type Localized, type Severity } from '../contract/index.ts';
import { holdDue, stepLatch, type LatchEvent } from './alert-state.ts';
import { latched, latchOf, latchRuleOf, setLatch, type KeyState } from './key-state.ts';
import type { KeyStore } from './key-store.ts';
import type { Params } from './language.ts';
import type { AlertTransition, CompiledRule, Comparison, TransitionKind } from './types.ts';

export const compare = (c: Comparison, v: number, p: Params) => (c.op === 'above' ? v > c.value.eval(p) : v < c.value.eval(p));

/** What a transition says beyond the rule and the key's state. */
export interface Occurrence {
  deviceId: string;
  at: number;
  value: number | null;
  eventType: string | null;
  drill: boolean;
  reason: Localized;
}

/** The highest severity of the rule's value levels met by `v` (the rule's own at least). */
export function severityFor(r: CompiledRule, v: number | null, p: Params): Severity {
  let s = r.severity;
  if (v === null) return s;
  for (const l of r.levels) if (compare(l.compare, v, p) && severityRank(l.severity) > severityRank(s)) s = l.severity;
  return s;
}

export class LatchDriver {
  constructor(private readonly store: KeyStore) {}

  emit(out: AlertTransition[], kind: TransitionKind, r: CompiledRule, key: string, st: KeyState, o: Occurrence): void {
    out.push({
      kind, key, ruleId: r.id, ruleVersion: r.version, title: r.name, category: r.category, severity: st.sev ?? r.severity,
      gatewayId: st.g, deviceId: o.deviceId, orgPath: st.o, value: o.value, eventType: o.eventType, at: o.at, drill: o.drill,
      actions: r.actions, escalateAfterMs: r.escalateAfterMs, reason: o.reason,
    });
  }

  /** Step the latch of `key`; keeps the tick set in step with it. */
  step(r: CompiledRule, key: string, st: KeyState, event: LatchEvent, at: number) {
    const { latch, effect } = stepLatch(latchRuleOf(r), latchOf(st), event, at);
    setLatch(st, latch);
    if (latched(st)) this.store.timed.add(key);
    this.store.touch(st.o);
    return effect;
  }

  /** The rule's condition holds: the latch table says whether that raises, re-raises or is absorbed. */
  trigger(out: AlertTransition[], r: CompiledRule, key: string, st: KeyState, p: Params, o: Occurrence): void {
    const effect = this.step(r, key, st, 'trigger', o.at);
    if (effect === 'raise') {
      st.c = null;
      st.sev = severityFor(r, o.value, p);
      if (o.drill) st.dr = 1;
      else delete st.dr;
      this.emit(out, 'raised', r, key, st, o);
    } else if (effect === 'retrigger') {
      this.emit(out, 'retriggered', r, key, st, o);
    }
  }

  /** The rule's own clear holds. A latch that re-arms forgets counts and pending durations. */
  clear(out: AlertTransition[], r: CompiledRule, key: string, st: KeyState, at: number, value: number | null, reason: Localized): void {
    const effect = this.step(r, key, st, 'clear', at);
    if (effect === 'cleared') this.emit(out, 'cleared', r, key, st, { deviceId: st.d, at, value, eventType: null, drill: !!st.dr, reason });
    if (latched(st)) return; // a rule that does not clear by itself ignores clears
    this.forget(st);
  }

  /** A re-armed latch starts afresh. */
  forget(st: KeyState): void {
    delete st.sev;
    delete st.dr;
    st.p = null;
    st.c = null;
    delete st.h;
    if (st.m) st.m = {};
  }

  /** The re-arm hold elapsed since the last trigger: the latch re-arms (no transition, fresh counts). */
  hold(r: CompiledRule, key: string, st: KeyState, now: number): void {
    const lr = latchRuleOf(r);
    if (!holdDue(lr, latchOf(st), now) || stepLatch(lr, latchOf(st), 'hold', now).latch.state === latchOf(st).state) return;
    this.step(r, key, st, 'hold', now);
    if (!latched(st)) this.forget(st);
  }

  /** The desk acknowledged or resolved. Returns false when the key has nothing latched. */
  person(r: CompiledRule, key: string, st: KeyState, event: 'ack' | 'resolve', at: number): boolean {
    if (!latched(st)) return false;
    this.step(r, key, st, event, at);
    if (!latched(st)) this.forget(st);
    return true;
  }
}
