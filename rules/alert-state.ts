// The alert latch of one rule on one subject (a device, or a group of devices for composite
// rules): a state machine written as a table. The rule engine fires its events (a trigger, the
// rule's own clear, the hold elapsing) and the alerting tier fires the desk's (acknowledge,
// resolve); each step returns the next state and what to do about it. Pure: time is passed in.
//
// Two tables, by what the rule watches:
// - DISCRETE (event rules: a watch-list hit, a forced gate, a detector's alarm contact). Each event
//   is an occurrence. The desk's resolve re-arms at once, so the next occurrence is a new alert;
//   an occurrence while the alert is open is the same alert ("retrigger": the alerting tier opens
//   a new one if the desk closed it where this engine could not see).
// - CONTINUOUS (metric and absence rules: a density above a threshold, a silent device). A
//   condition that lasts. Resolved by the desk while it still holds, the latch waits for the
//   rule's clear (or its hold) before it re-arms; otherwise the next reading would re-raise.
//
//   armed ──trigger──> raised ──ack──> acknowledged ──resolve──> armed                  (discrete)
//                        │                  │       └─resolve──> resolved ──clear──> armed (continuous)
//                        └──────clear───────┴──────────────────────────────────────────> armed
//
// The hold (`rearm: { after }`, default 10 min for rules without a clear of their own) re-arms a
// latch whose alert the desk closed elsewhere, so no later occurrence is ever swallowed.

export const LATCH_STATES = ['armed', 'raised', 'acknowledged', 'resolved'] as const;
export type LatchState = (typeof LATCH_STATES)[number];

export const LATCH_EVENTS = ['trigger', 'clear', 'ack', 'resolve', 'hold'] as const;
/**
 * trigger: the rule's condition holds (a matching event, a duration reached).
 * clear:   the rule's own clear condition holds (value back to normal, clearing event, quiet, data again).
 * ack / resolve: a person at the desk.
 * hold:    the re-arm hold elapsed since the last trigger (fired by the engine's tick).
 */
export type LatchEvent = (typeof LATCH_EVENTS)[number];

/**
 * raise: a new alert for the desk.  retrigger: the alert should be open; the alerting tier opens a
 * new one if the desk closed it where this engine could not see.  cleared: the rule cleared it.
 */
export type LatchEffect = 'raise' | 'retrigger' | 'cleared' | null;

export interface Step {
  to: LatchState;
  effect: LatchEffect;
}

type Table = Record<LatchState, Record<LatchEvent, Step>>;
const stay = (s: LatchState): Step => ({ to: s, effect: null });
const go = (to: LatchState, effect: LatchEffect = null): Step => ({ to, effect });

/** Metric and absence rules: a condition that lasts. */
export const CONTINUOUS: Table = {
  //             trigger                          clear                          ack                        resolve                hold
  armed:        { trigger: go('raised', 'raise'), clear: stay('armed'),          ack: stay('armed'),        resolve: stay('armed'), hold: stay('armed') },
  raised:       { trigger: stay('raised'),        clear: go('armed', 'cleared'), ack: go('acknowledged'),   resolve: go('resolved'), hold: go('armed') },
  acknowledged: { trigger: stay('acknowledged'),  clear: go('armed', 'cleared'), ack: stay('acknowledged'), resolve: go('resolved'), hold: go('armed') },
  resolved:     { trigger: stay('resolved'),      clear: go('armed', 'cleared'), ack: stay('resolved'),     resolve: stay('resolved'), hold: go('armed') },
};

/** Event rules: each event an occurrence. */
export const DISCRETE: Table = {
  //             trigger                                  clear                          ack                        resolve              hold
  armed:        { trigger: go('raised', 'raise'),         clear: stay('armed'),          ack: stay('armed'),        resolve: stay('armed'), hold: stay('armed') },
  raised:       { trigger: go('raised', 'retrigger'),     clear: go('armed', 'cleared'), ack: go('acknowledged'),   resolve: go('armed'),   hold: go('armed') },
  acknowledged: { trigger: go('acknowledged', 'retrigger'), clear: go('armed', 'cleared'), ack: stay('acknowledged'), resolve: go('armed'), hold: go('armed') },
  resolved:     { trigger: go('raised', 'raise'),         clear: stay('armed'),          ack: stay('resolved'),     resolve: go('armed'),   hold: go('armed') },
};

/** Default re-arm hold of rules only a person closes (a rule may set `rearm: { after: … }`). */
export const DEFAULT_REARM_MS = 10 * 60_000;

export interface LatchRule {
  /** event rules are discrete; metric and absence rules continuous */
  kind: 'discrete' | 'continuous';
  /** re-arm hold after the last trigger; null = none (rules with a clear of their own wait for it) */
  rearmAfterMs: number | null;
}

/** The persisted part of a latch (kept in the engine's per-key state, saved with the alerts). */
export interface Latch {
  state: LatchState;
  /** time of the last trigger (the hold counts from it) */
  since: number | null;
}

export const ARMED: Latch = { state: 'armed', since: null };

/** One step of the machine. Unknown states (an old snapshot) read as raised: never forget an alert. */
export function stepLatch(rule: LatchRule, latch: Latch, event: LatchEvent, at: number): { latch: Latch; effect: LatchEffect } {
  const table = rule.kind === 'discrete' ? DISCRETE : CONTINUOUS;
  const from = (LATCH_STATES as readonly string[]).includes(latch.state) ? latch.state : 'raised';
  const step = table[from][event];
  const since = step.to === 'armed' ? null : event === 'trigger' ? at : latch.since;
  return { latch: { state: step.to, since }, effect: step.effect };
}

/** Has the hold elapsed (the engine fires `hold` when this says so)? */
export function holdDue(rule: LatchRule, latch: Latch, now: number): boolean {
  return latch.state !== 'armed' && rule.rearmAfterMs !== null && latch.since !== null && now - latch.since >= rule.rearmAfterMs;
}

/** Is an alert of this latch open as far as the engine knows (raised or acknowledged)? */
export const isOpenLatch = (l: Latch): boolean => l.state === 'raised' || l.state === 'acknowledged';
/** Is the latch holding off new alerts? */
export const isLatched = (l: Latch): boolean => l.state !== 'armed';
