// The engine's per-series seq guard: the contract the ingest worker relies on when it evaluates
// rules on arrival, before its storage commit, and a message comes again after a crash.
import { describe, expect, it } from 'vitest';
import type { DeviceEvent, Reading } from '../contract/index.ts';
import { backtest, compileRules, createRuleEngine, type AlertTransition, type CompiledRule, type EngineSnapshot, type EvalContext } from './index.ts';

const SITE = '37/3701/370102/3737000001';
const ctx: EvalContext = { gatewayId: 'gw-1', orgPath: SITE };
const T = Date.parse('2026-11-28T02:00:00Z');

const rule = (yaml: string): CompiledRule => {
  const r = compileRules([{ file: 't.yaml', text: yaml }]);
  expect(r.errors).toEqual([]);
  return r.rules[0]!;
};
const SMOKE = rule(`
id: smoke
name: { zh: 烟雾, en: Smoke }
category: emergency
severity: critical
when: { metric: smoke_density, above: 0.1, for: 10s }
clear: { below: 0.05, for: 30s }
`);
const FORCED = rule(`
id: forced
name: { zh: 强行开门, en: Gate forced open }
category: hazard
severity: major
when: { event: gate.forced_open }
`);
const rd = (seq: number, device: string, ts: number, value: number, metric = 'smoke_density'): Reading => ({ seq, device, metric, ts, value, quality: 'good' });
const ev = (seq: number, device: string, ts: number, type = 'gate.forced_open'): DeviceEvent => ({ seq, device, type, ts, priority: 'alarm', drill: false, data: {} });
const kinds = (ts: AlertTransition[]) => ts.map((t) => `${t.kind}:${t.ruleId}:${t.deviceId}`);

/** one uplink batch: a fire that raises and clears, a forced gate */
const batch = { readings: [rd(1, 's1', T, 0.2), rd(2, 's1', T + 10_000, 0.2), rd(3, 's1', T + 20_000, 0.01), rd(4, 's1', T + 51_000, 0.01)], events: [ev(5, 'gate-1', T + 1000)] };
function feed(e: ReturnType<typeof createRuleEngine>, b: typeof batch, c: EvalContext = ctx): string[] {
  const out: AlertTransition[] = [];
  for (const x of b.events) out.push(...e.onEvent(x, c).transitions);
  for (const x of b.readings) out.push(...e.onReading(x, c).transitions);
  return kinds(out);
}

describe('seq guard', () => {
  it('a redelivered batch raises nothing new, even after the desk resolved its alerts', () => {
    const e = createRuleEngine([SMOKE, FORCED]);
    expect(feed(e, batch)).toEqual(['raised:forced:gate-1', 'raised:smoke:s1', 'cleared:smoke:s1']);
    e.person('forced|gw-1|gate-1', 'resolve', T + 60_000); // a discrete latch re-arms: the next event would raise
    expect(feed(e, batch)).toEqual([]);
    // what comes next is evaluated as always
    expect(kinds(e.onEvent(ev(6, 'gate-1', T + 70_000), ctx).transitions)).toEqual(['raised:forced:gate-1']);
  });

  it('an older seq of the same series is ignored, whatever its time or value', () => {
    const e = createRuleEngine([SMOKE]);
    e.onReading(rd(10, 's1', T, 0.01), ctx);
    expect(e.onReading(rd(9, 's1', T + 1000, 0.9), ctx)).toEqual({ transitions: [], faults: [] });
    expect(e.onReading(rd(10, 's1', T + 20_000, 0.9), ctx).transitions).toEqual([]);
    // the ignored high readings started no duration: 0.9 from seq 11 on needs its own 10 s
    expect(e.onReading(rd(11, 's1', T + 30_000, 0.9), ctx).transitions).toEqual([]);
    expect(kinds(e.onReading(rd(12, 's1', T + 40_000, 0.9), ctx).transitions)).toEqual(['raised:smoke:s1']);
  });

  it('other series are unaffected: another metric, device, gateway or event type', () => {
    const e = createRuleEngine([SMOKE, FORCED]);
    e.onReading(rd(100, 's1', T, 0.01), ctx);
    e.onEvent(ev(100, 'gate-1', T), ctx);
    expect(e.onReading(rd(1, 's1', T, 0.01, 'temperature'), ctx)).toEqual({ transitions: [], faults: [] });
    e.onReading(rd(1, 's2', T, 0.2), ctx);
    expect(kinds(e.onReading(rd(2, 's2', T + 10_000, 0.2), ctx).transitions)).toEqual(['raised:smoke:s2']);
    const gw2 = { ...ctx, gatewayId: 'gw-2' };
    e.onReading(rd(1, 's1', T, 0.2), gw2);
    expect(kinds(e.onReading(rd(2, 's1', T + 10_000, 0.2), gw2).transitions)).toEqual(['raised:smoke:s1']);
    expect(kinds(e.onEvent(ev(1, 'gate-2', T), ctx).transitions)).toEqual(['raised:forced:gate-2']);
    // same device, another event type: its own series
    e.onEvent(ev(1, 'gate-1', T, 'gate.closed'), ctx);
    expect(e.snapshot(SITE).seq!['gw-1/gate-1']!.e).toEqual({ 'gate.forced_open': [100, T], 'gate.closed': [1, T] });
  });

  it('the marks round-trip through snapshot and restore, per site', () => {
    const other = { gatewayId: 'gw-9', orgPath: '37/3702/370202/3737000009' };
    const e1 = createRuleEngine([SMOKE, FORCED]);
    feed(e1, batch);
    e1.onReading(rd(7, 'x', T, 0.01), other);
    expect(e1.takeDirtySites().sort()).toEqual([other.orgPath, SITE].sort());
    const saved = JSON.parse(e1.snapshotJson(SITE)) as EngineSnapshot;
    expect(saved.seq).toEqual({ 'gw-1/s1': { o: SITE, r: { smoke_density: [4, T + 51_000] } }, 'gw-1/gate-1': { o: SITE, e: { 'gate.forced_open': [5, T + 1000] } } });
    const e2 = createRuleEngine([SMOKE, FORCED], { state: saved });
    expect(e2.snapshot(SITE)).toEqual(e1.snapshot(SITE));
    expect(e2.snapshot(other.orgPath).seq).toEqual({});
  });

  it('a restart, then the same message again: nothing new', () => {
    const e1 = createRuleEngine([SMOKE, FORCED]);
    expect(feed(e1, { ...batch, readings: batch.readings.slice(0, 2) })).toEqual(['raised:forced:gate-1', 'raised:smoke:s1']);
    // what the alerting tier stores with the alerts, in one transaction
    const row = e1.snapshotJson(SITE);
    const e2 = createRuleEngine([SMOKE, FORCED], { state: [JSON.parse(row) as EngineSnapshot] });
    // without the guard the forced gate would retrigger, the smoke pass through its latch again
    expect(feed(e2, { ...batch, readings: batch.readings.slice(0, 2) })).toEqual([]);
    // the rest of the story continues where it was
    expect(feed(e2, { readings: batch.readings.slice(2), events: [] })).toEqual(['cleared:smoke:s1']);
  });

  it('a state saved before the guard existed restores, and its first records pass', () => {
    const e = createRuleEngine([FORCED], { state: { v: 1, states: {}, seen: {} } });
    expect(kinds(e.onEvent(ev(1, 'gate-1', T), ctx).transitions)).toEqual(['raised:forced:gate-1']);
  });

  it('a record without seq bypasses the guard', () => {
    const e = createRuleEngine([FORCED]);
    const noSeq = { ...ev(0, 'gate-1', T) } as Partial<DeviceEvent>;
    delete noSeq.seq;
    expect(kinds(e.onEvent(noSeq as DeviceEvent, ctx).transitions)).toEqual(['raised:forced:gate-1']);
    e.person('forced|gw-1|gate-1', 'resolve', T + 1);
    expect(kinds(e.onEvent(noSeq as DeviceEvent, ctx).transitions)).toEqual(['raised:forced:gate-1']);
    expect(e.snapshot(SITE).seq).toEqual({});
  });

  it('backtests replay history whatever its seqs', () => {
    const recs = [1, 2, 3].map((i) => ({ kind: 'event' as const, gatewayId: 'gw-1', orgPath: SITE, event: ev(1, 'gate-1', T + i * 60_000) }));
    const clearing = rule(FORCED.source.replace('when:', 'clear: { quiet: 30s }\nwhen:'));
    expect(backtest(clearing, recs, { tickMs: 10_000 })[0]!.alerts).toHaveLength(3);
  });

  it('series silent past the horizon are forgotten on a tick', () => {
    const e = createRuleEngine([SMOKE], { seqGuard: { horizonMs: 3_600_000 } });
    e.onReading(rd(50, 's1', T, 0.01), ctx);
    e.takeDirtySites();
    e.onTick(T + 30 * 60_000);
    expect(Object.keys(e.snapshot(SITE).seq!)).toEqual(['gw-1/s1']);
    e.onTick(T + 2 * 3_600_000);
    expect(e.snapshot(SITE).seq).toEqual({});
    expect(e.takeDirtySites()).toEqual([SITE]); // the forgetting is saved too
  });

  it('seqGuard: false evaluates every record', () => {
    const e = createRuleEngine([FORCED], { seqGuard: false });
    e.onEvent(ev(1, 'gate-1', T), ctx);
    e.person('forced|gw-1|gate-1', 'resolve', T + 1);
    expect(kinds(e.onEvent(ev(1, 'gate-1', T), ctx).transitions)).toEqual(['raised:forced:gate-1']);
  });
});
