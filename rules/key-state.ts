// The per-key state of the engine (one rule on one device, or on one group of devices) and how
// the alert latch (alert-state.ts) is read from and written into it. Short keys: it is saved often.
import type { Severity } from '../contract/index.ts';
import { ARMED, DEFAULT_REARM_MS, isLatched, type Latch, type LatchRule, type LatchState } from './alert-state.ts';
import type { CompiledRule } from './types.ts';

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

/** How the latch table applies to a rule. */
export function latchRuleOf(r: CompiledRule): LatchRule {
  return { kind: r.when.kind === 'event' ? 'discrete' : 'continuous', rearmAfterMs: r.rearmAfterMs ?? (r.clear.kind === 'manual' ? DEFAULT_REARM_MS : null) };
}

export const latchOf = (st: KeyState): Latch => (st.ls ? { state: st.ls, since: st.lx ?? null } : st.a ? { state: 'raised', since: st.lx ?? null } : ARMED);

export function setLatch(st: KeyState, l: Latch): void {
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

/** Is the latch of this state holding off new alerts? (unknown key: no) */
export const latched = (st: KeyState | undefined): boolean => !!st && isLatched(latchOf(st));

/** Does this key need attention on ticks (pending duration, pending clear, latch hold)? */
export const needsTicks = (st: KeyState): boolean => st.p != null || st.c != null || latched(st);

/** The rule id of a key `rule|gateway|subject`. */
export const ruleIdOf = (key: string): string => key.slice(0, key.indexOf('|'));
