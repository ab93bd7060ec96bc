import { describe, expect, it } from 'vitest';
import { SeqGuard } from './seq-guard.ts';

const T = Date.parse('2026-11-30T01:00:00Z');
const DAY = 86_400_000;

describe('SeqGuard', () => {
  it('admits a seq once per series, and nothing at or below the highest', () => {
    const g = new SeqGuard();
    expect(g.admit('gw-1', 'S', 'd1', 'r', 'temp', 5, T)).toBe(true);
    expect(g.admit('gw-1', 'S', 'd1', 'r', 'temp', 5, T)).toBe(false);
    expect(g.admit('gw-1', 'S', 'd1', 'r', 'temp', 4, T + 1)).toBe(false);
    expect(g.admit('gw-1', 'S', 'd1', 'r', 'temp', 6, T + 2)).toBe(true);
    expect(g.highest('gw-1', 'd1', 'r', 'temp')).toBe(6);
  });

  it('keeps series apart: metric, event type, device, gateway, and readings from events', () => {
    const g = new SeqGuard();
    expect(g.admit('gw-1', 'S', 'd1', 'r', 'temp', 9, T)).toBe(true);
    expect(g.admit('gw-1', 'S', 'd1', 'r', 'smoke', 3, T)).toBe(true);
    expect(g.admit('gw-1', 'S', 'd2', 'r', 'temp', 3, T)).toBe(true);
    expect(g.admit('gw-2', 'S', 'd1', 'r', 'temp', 3, T)).toBe(true);
    expect(g.admit('gw-1', 'S', 'd1', 'e', 'temp', 3, T)).toBe(true);
    expect(g.admit('gw-1', 'S', 'd1', 'e', 'gate.forced_open', 3, T)).toBe(true);
  });

  it('records without seq always pass and leave no mark', () => {
    const g = new SeqGuard();
    expect(g.admit('gw-1', 'S', 'd1', 'r', 'temp', undefined, T)).toBe(true);
    expect(g.admit('gw-1', 'S', 'd1', 'r', 'temp', undefined, T)).toBe(true);
    expect(g.collect(undefined)).toEqual({});
  });

  it('saves per site and restores; the higher mark wins on merge', () => {
    const g = new SeqGuard();
    g.admit('gw-1', 'S1', 'd1', 'r', 'temp', 7, T);
    g.admit('gw-1', 'S1', 'd1', 'e', 'door.open', 2, T);
    g.admit('gw-9', 'S2', 'd1', 'r', 'temp', 70, T);
    const s1 = JSON.parse(JSON.stringify(g.collect('S1')));
    expect(s1).toEqual({ 'gw-1/d1': { o: 'S1', r: { temp: [7, T] }, e: { 'door.open': [2, T] } } });
    const h = new SeqGuard();
    h.admit('gw-1', 'S1', 'd1', 'r', 'temp', 8, T + 1);
    h.restore(s1);
    expect(h.highest('gw-1', 'd1', 'r', 'temp')).toBe(8);
    expect(h.admit('gw-1', 'S1', 'd1', 'e', 'door.open', 2, T)).toBe(false);
    expect(h.collect('S2')).toEqual({});
    h.restore({ 'bad-key': { o: 'S1' }, 'gw-1/d2': { o: 'S1', r: { temp: 'x' as never } } });
    expect(h.highest('gw-1', 'd2', 'r', 'temp')).toBeUndefined();
  });

  it('forgets series without records for the horizon, and only those', () => {
    const g = new SeqGuard(7 * DAY);
    g.admit('gw-1', 'S', 'old', 'r', 'temp', 1, T);
    g.admit('gw-1', 'S', 'live', 'r', 'temp', 2, T + 6 * DAY);
    expect(g.sweep(T + 7 * DAY + 1)).toEqual(['S']);
    expect(g.highest('gw-1', 'old', 'r', 'temp')).toBeUndefined();
    expect(g.highest('gw-1', 'live', 'r', 'temp')).toBe(2);
    expect(Object.keys(g.collect('S'))).toEqual(['gw-1/live']);
    // a forgotten series starts afresh
    expect(g.admit('gw-1', 'S', 'old', 'r', 'temp', 1, T + 8 * DAY)).toBe(true);
  });

  it('sweeps at most every horizon/24 (ticks are frequent)', () => {
    const MIN = 60_000;
    const g = new SeqGuard(60 * MIN); // sweeps at most every 2.5 min
    g.admit('gw-1', 'S', 'd', 'r', 'temp', 1, T);
    expect(g.sweep(T + 59 * MIN)).toEqual([]); // not expired yet
    expect(g.sweep(T + 61 * MIN)).toEqual([]); // expired, but swept 2 min ago
    expect(g.sweep(T + 62 * MIN)).toEqual(['S']);
  });

  it('a gateway moved to another site takes its marks along', () => {
    const g = new SeqGuard();
    g.admit('gw-1', 'S1', 'd', 'r', 'temp', 1, T);
    g.admit('gw-1', 'S2', 'd', 'r', 'temp', 2, T);
    expect(g.collect('S1')).toEqual({});
    expect(Object.keys(g.collect('S2'))).toEqual(['gw-1/d']);
  });
});
