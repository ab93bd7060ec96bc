import { describe, expect, it } from 'vitest';
import { CustodyTracker, inRanges } from './custody.ts';
import { createManualClock } from './testing.ts';

function tracker(timeoutMs = 30_000) {
  const clock = createManualClock();
  let fired = 0;
  const t = new CustodyTracker(clock, timeoutMs, () => fired++);
  return { clock, t, fired: () => fired };
}

describe('custody tracker', () => {
  it('keeps a batch open until receipts name every one of its seqs, whatever else happens', () => {
    const { t } = tracker();
    t.sent('reading', [3, 1, 2]);
    t.sent('alarm', [4]);
    expect(t.count('routine')).toBe(1);
    expect(t.count('alarm')).toBe(1);
    // a receipt for part of a batch leaves the rest open; unknown seqs are ignored
    expect(t.confirm([[1, 2], [50, 60]])).toBe(2);
    expect(t.count('routine')).toBe(1);
    expect(t.confirm([[3, 4]])).toBe(2);
    expect(t.size()).toBe(0);
  });

  it('calls for a resend at the timeout (alarms at half of it), alarms first, and restarts the deadline on resend', async () => {
    const { clock, t, fired } = tracker(30_000);
    const r = t.sent('reading', [1, 2, 3]);
    await clock.advance(10_000);
    const a = t.sent('alarm', [4]);
    await clock.advance(14_999);
    expect(fired()).toBe(0);
    expect(t.due()).toEqual([]);
    await clock.advance(1);
    expect(fired()).toBe(1);
    expect(t.due().map((b) => b.id)).toEqual([a.id]);
    await clock.advance(5_000);
    expect(fired()).toBe(2);
    expect(t.due().map((b) => b.id)).toEqual([a.id, r.id]);
    // the reading batch went out again with what is left of it; the alarm did not
    t.resent(r.id, [2, 3]);
    expect(t.due().map((b) => b.id)).toEqual([a.id]);
    await clock.advance(30_000);
    expect(t.due().map((b) => [b.id, b.seqs, b.sends])).toEqual([[a.id, [4], 1], [r.id, [2, 3], 2]]);
    // nothing of a batch left in the buffer closes it
    t.resent(a.id, []);
    expect(t.count('alarm')).toBe(0);
  });

  it('resends alarms sent with a backlog before the backlog (a reconnect into a broker that dropped both)', async () => {
    const { clock, t } = tracker(4_000);
    const backlog = t.sent('reading', [1, 2, 3]);
    const alarm = t.sent('alarm', [4]);
    await clock.advance(2_000);
    expect(t.due().map((b) => b.id)).toEqual([alarm.id]);
    t.resent(alarm.id, [4]);
    await clock.advance(2_000);
    // both due again now: the alarm (resent 2 s ago) still goes first
    expect(t.due().map((b) => b.id)).toEqual([alarm.id, backlog.id]);
  });

  it('does not spin while a due batch waits for a reconnect, and stops its timer', async () => {
    const { clock, t, fired } = tracker(1000);
    t.sent('event', [1]);
    await clock.advance(5000);
    expect(fired()).toBe(1); // once, not once per tick
    expect(clock.pending()).toBe(0);
    t.sent('event', [2]);
    expect(clock.pending()).toBe(1);
    t.stop();
    expect(clock.pending()).toBe(0);
  });

  it('reports when the oldest unconfirmed batch was first sent, across resends', async () => {
    const { clock, t } = tracker(1000);
    expect(t.oldestFirstSentAt()).toBeNull();
    const start = clock.now();
    const b = t.sent('reading', [1]);
    await clock.advance(1500);
    t.resent(b.id, [1]);
    t.sent('reading', [2]);
    expect(t.oldestFirstSentAt()).toBe(start);
    t.confirm([[1, 1]]);
    expect(t.oldestFirstSentAt()).toBe(start + 1500);
  });

  it('lists every open alarm batch (sent again first on a reconnect)', () => {
    const { t } = tracker();
    t.sent('alarm', [7]);
    t.sent('reading', [1]);
    t.sent('alarm', [9]);
    expect(t.alarms().map((b) => b.seqs)).toEqual([[7], [9]]);
  });

  it('finds a seq in inclusive ranges', () => {
    const ranges: Array<[number, number]> = [[1, 3], [7, 7], [10, 20]];
    expect([0, 1, 3, 4, 7, 8, 10, 20, 21].map((s) => inRanges(ranges, s))).toEqual([false, true, true, false, true, false, true, true, false]);
  });
});
