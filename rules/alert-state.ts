// The alert latch of one rule on one subject (a device, or a group of devices for composite
// rules): a state machine written as a table. The rule engine fires its events (a trigger, the
// rule's own clear, the hold elapsing) and the alerting tier fires the desk's (acknowledge,
// resolve); each step returns the next state and what to do about it. Pure: time is passed in.
//
//   armed ──trigger──> raised ──ack──> acknowledged ──resolve──> armed          (rules that never clear)
//                        │                  │       └─resolve──> resolved ──clear──> armed (rules that clear)
//                        └──────clear───────┴──────────────────────────────────────> armed
//
// Why a "resolved" state at all: a smoke density rule resolved by the desk while the density is
// still high must not raise again on the next reading; it re-arms when its clear condition holds
// (or its hold elapses). A rule with no clear of its own (a watch-list hit) has nothing to wait
// for: the desk's resolve re-arms it at once, and the hold re-arms it when the desk's resolution
// never reached this engine (another process resolved it), so no later hit is ever swallowed.

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

/** Rules with a clear condition of their own (metric, absence, clearing event or quiet). */
export const SELF_CLEARING: Table = {
  //             trigger                   clear                   ack                    resolve              hold
  armed:        { trigger: go('raised', 'raise'), clear: stay('armed'),           ack: stay('armed'),         resolve: stay('armed'),     hold: stay('armed') },
  raised:       { trigger: stay('raised'),        clear: go('armed', 'cleared'),  ack: go('acknowledged'),    resolve: go('resolved'),    hold: stay('raised') },
  acknowledged: { trigger: stay('acknowledged'),  clear: go('armed', 'cleared'),  ack: stay('acknowledged'),  resolve: go('resolved'),    hold: stay('acknowledged') },
  resolved:     { trigger: stay('resolved'),      clear: go('armed', 'cleared'),  ack: stay('resolved'),      resolve: stay('resolved'),  hold: go('armed') },
};

/** Rules only a person closes (event rules without clear, `clear: { manual: true }`). */
export const PERSON_CLEARED: Table = {
  //             trigger                              clear               ack                    resolve          hold
  armed:        { trigger: go('raised', 'raise'),              clear: stay('armed'),        ack: stay('armed'),        resolve: stay('armed'), hold: stay('armed') },
  raised:       { trigger: go('raised', 'retrigger'),          clear: stay('raised'),       ack: go('acknowledged'),   resolve: go('armed'),   hold: go('armed') },
  acknowledged: { trigger: go('acknowledged', 'retrigger'),    clear: stay('acknowledged'), ack: stay('acknowledged'), resolve: go('armed'),   hold: go('armed') },
  resolved:     { trigger: go('raised', 'raise'),              clear: stay('resolved'),     ack: stay('resolved'),     resolve: go('armed'),   hold: go('armed') },
};

/** Default re-arm hold of rules only a person closes (a rule may set `rearm: { after: … }`). */
export const DEFAULT_REARM_MS = 10 * 60_000;

export interface LatchRule {
  /** the rule has a clear condition of its own */
  selfClearing: boolean;
  /** re-arm hold after the last trigger; null = none (self-clearing rules wait for their clear) */
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
  const table = rule.selfClearing ? SELF_CLEARING : PERSON_CLEARED;
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
