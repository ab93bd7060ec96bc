// The latch table itself: total, and the rows the desk relies on.
import { describe, expect, it } from 'vitest';
import { CONTINUOUS, DISCRETE, LATCH_EVENTS, LATCH_STATES, holdDue, stepLatch, type LatchRule } from './alert-state.ts';

const event: LatchRule = { kind: 'discrete', rearmAfterMs: 600_000 };
const metric: LatchRule = { kind: 'continuous', rearmAfterMs: null };

describe('the alert latch', () => {
  it('has a transition for every state and event, in both tables', () => {
    for (const table of [CONTINUOUS, DISCRETE]) for (const s of LATCH_STATES) for (const e of LATCH_EVENTS) expect(LATCH_STATES, `${s} × ${e}`).toContain(table[s][e].to);
    // only a trigger from armed raises; only a clear of an open or resolved latch reports a clear
    for (const table of [CONTINUOUS, DISCRETE]) expect(LATCH_STATES.filter((s) => table[s].trigger.effect === 'raise')).toContain('armed');
  });

  it('an event rule re-arms when the desk resolves: the next occurrence raises', () => {
    let l = stepLatch(event, { state: 'armed', since: null }, 'trigger', 0);
    expect(l).toEqual({ latch: { state: 'raised', since: 0 }, effect: 'raise' });
    expect(stepLatch(event, l.latch, 'trigger', 5).effect).toBe('retrigger'); // the same alert
    l = stepLatch(event, stepLatch(event, l.latch, 'ack', 6).latch, 'resolve', 7);
    expect(l.latch.state).toBe('armed');
    expect(stepLatch(event, l.latch, 'trigger', 8).effect).toBe('raise');
  });

  it('a metric rule resolved while its condition holds waits for its clear', () => {
    const raised = stepLatch(metric, { state: 'armed', since: null }, 'trigger', 0).latch;
    const resolved = stepLatch(metric, raised, 'resolve', 1).latch;
    expect(resolved.state).toBe('resolved');
    expect(stepLatch(metric, resolved, 'trigger', 2)).toEqual({ latch: { state: 'resolved', since: 2 }, effect: null });
    expect(stepLatch(metric, resolved, 'clear', 3)).toEqual({ latch: { state: 'armed', since: null }, effect: 'cleared' });
  });

  it('the hold re-arms a latch whose alert the desk closed out of sight, counted from the last trigger', () => {
    const raised = stepLatch(event, stepLatch(event, { state: 'armed', since: null }, 'trigger', 0).latch, 'trigger', 100_000).latch;
    expect(holdDue(event, raised, 600_000)).toBe(false);
    expect(holdDue(event, raised, 700_000)).toBe(true);
    expect(stepLatch(event, raised, 'hold', 700_000).latch.state).toBe('armed');
    expect(holdDue(metric, raised, 10 ** 12)).toBe(false); // no hold unless the rule sets one
    // a snapshot of an unknown state reads as raised: never forget an alert
    expect(stepLatch(event, { state: 'bogus' as never, since: 1 }, 'trigger', 2).effect).toBe('retrigger');
  });
});
