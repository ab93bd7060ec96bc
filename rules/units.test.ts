// Fast tests of the engine's units, each on its own (the engine's behaviour is in engine.test.ts).
import { describe, expect, it } from 'vitest';
import { compileRules, type CompiledRule, type DeviceInfo } from './index.ts';
import { silence } from './conditions/absence.ts';
import { groupHolds, groupOf } from './conditions/composite.ts';
import { matchesWhere } from './conditions/event.ts';
import { advanceHold, HOLDS, metricCondition, PENDING } from './conditions/metric.ts';
import { latched, latchOf, type KeyState } from './key-state.ts';
import { KeyStore } from './key-store.ts';
import { ParamCache, resolveParams } from './overrides.ts';
import { AncestorPaths, buildIndex, selects } from './rule-index.ts';
import { SeqGuard } from './seq-guard.ts';

const SITE = '37/3701/370102/3737000001';
const T = Date.parse('2026-11-28T02:00:00Z');
const rule = (yaml: string): CompiledRule => {
  const r = compileRules([{ file: 't.yaml', text: `name: { zh: 规则, en: Rule }\ncategory: hazard\nseverity: major\n${yaml}` }]);
  expect(r.errors).toEqual([]);
  return r.rules[0]!;
};
const st = (): KeyState => ({ o: SITE, g: 'gw-1', d: 'd1' });

describe('overrides', () => {
  const r = rule(`id: t
when: { metric: temp, above: "\${limit}" }
params: { limit: 50, margin: 1 }
overrides:
  - { scope: "37", params: { limit: 45 } }
  - { scope: "3737000001", params: { limit: 40 } }
  - { device: "gw-1/d9", params: { limit: 30 } }
  - { device: "d8", params: { margin: 2 } }`);
  it('the deepest override wins; parameters it does not name come from above', () => {
    expect(resolveParams(r, '37/3702/370202/3737000009', 'gw-2', 'd1')).toEqual({ limit: 45, margin: 1 });
    expect(resolveParams(r, SITE, 'gw-1', 'd1')).toEqual({ limit: 40, margin: 1 });
    expect(resolveParams(r, SITE, 'gw-1', 'd9')).toEqual({ limit: 30, margin: 1 });
    expect(resolveParams(r, SITE, 'gw-2', 'd9')).toEqual({ limit: 40, margin: 1 }); // another gateway's d9
    expect(resolveParams(r, SITE, 'gw-1', 'd8')).toEqual({ limit: 40, margin: 2 });
    expect(resolveParams(r, '44/4401', 'gw-3', 'd1')).toBe(r.params);
  });
  it('the cache answers the same and forgets on clear', () => {
    const c = new ParamCache();
    expect(c.get(r, SITE, 'gw-1', 'd9')).toEqual({ limit: 30, margin: 1 });
    expect(c.get(r, SITE, 'gw-1', 'd9')).toBe(c.get(r, SITE, 'gw-1', 'd9'));
    const first = c.get(r, SITE, 'gw-1', 'd9');
    c.clear();
    expect(c.get(r, SITE, 'gw-1', 'd9')).not.toBe(first);
  });
});

describe('rule index', () => {
  const scoped = rule(`id: scoped\nwhen: { metric: temp, above: 1 }\nmatch: { scope: "3701" }`);
  const all = rule(`id: all\nwhen: { metric: temp, above: 1 }\nmatch: { profiles: [th-1] }`);
  const evr = rule(`id: ev\nwhen: { event: [gate.forced_open, gate.held_open] }\nclear: { event: gate.closed }`);
  const abs = rule(`id: abs\nwhen: { absent: { for: 5m } }`);
  const off = rule(`id: off\nenabled: false\nwhen: { metric: temp, above: 1 }`);
  it('files rules by metric and scope, event type, clearing event, absence; disabled ones nowhere', () => {
    const idx = buildIndex([scoped, all, evr, abs, off]);
    expect(idx.byMetric.get('temp')!.all.map((r) => r.id)).toEqual(['all']);
    expect([...idx.byMetric.get('temp')!.byScope.keys()]).toEqual(['37/3701']);
    expect(idx.byEvent.get('gate.held_open')!.map((r) => r.id)).toEqual(['ev']);
    expect(idx.clearByEvent.get('gate.closed')!.map((r) => r.id)).toEqual(['ev']);
    expect(idx.absence.map((r) => r.id)).toEqual(['abs']);
    expect(idx.byId.has('off')).toBe(false);
  });
  it('selects by scope prefix (whole path segments), profile and device', () => {
    expect(selects(scoped, SITE, 'gw-1', 'd1')).toBe(true);
    expect(selects(scoped, '37/37010', 'gw-1', 'd1')).toBe(false);
    expect(selects(all, SITE, 'gw-1', 'd1', 'th-1')).toBe(true);
    expect(selects(all, SITE, 'gw-1', 'd1', null)).toBe(false);
    const dev = rule(`id: dev\nwhen: { metric: temp, above: 1 }\nmatch: { devices: [gw-1/d1, d2] }`);
    expect([selects(dev, SITE, 'gw-1', 'd1'), selects(dev, SITE, 'gw-2', 'd1'), selects(dev, SITE, 'gw-2', 'd2')]).toEqual([true, false, true]);
  });
  it('ancestor paths, nearest first', () => {
    expect(new AncestorPaths().of(SITE)).toEqual([SITE, '37/3701/370102', '37/3701', '37']);
  });
});

describe('metric conditions', () => {
  const th = rule(`id: th\nwhen: { metric: temp, above: 50, for: 10s, count: 2, within: 1m }`);
  const band = rule(`id: band\nwhen: { metric: temp, outside: [10, 30] }`);
  const rate = rule(`id: rate\nwhen: { metric: temp, rate: { above: 5, per: 1m } }`);
  it('threshold, band and rate (per unit of time, needs an earlier value)', () => {
    expect(metricCondition(th, st(), 51, T, th.params).cond).toBe(true);
    expect(metricCondition(band, st(), 20, T, band.params).cond).toBe(false);
    expect(metricCondition(band, st(), 31, T, band.params).cond).toBe(true);
    const s = st();
    expect(metricCondition(rate, s, 20, T, rate.params)).toEqual({ cond: false, shown: 0 });
    Object.assign(s, { lv: 10, lt: T - 30_000 });
    expect(metricCondition(rate, s, 14, T, rate.params)).toEqual({ cond: true, shown: 8 });
  });
  it('durations run from the first true reading; repeats count rising edges within the window', () => {
    const w = { ...(th.when as Extract<CompiledRule['when'], { forMs: number }>), repeat: undefined };
    const s = st();
    expect(advanceHold(w, s, true, T)).toBe(PENDING);
    expect(advanceHold(w, s, true, T + 10_000)).toBe(HOLDS);
    expect(advanceHold(w, s, false, T + 11_000)).toBe(0);
    expect(s.p).toBeNull();
    const rw = th.when as Extract<CompiledRule['when'], { forMs: number }>;
    const r = st();
    expect(advanceHold(rw, r, true, T) & HOLDS).toBe(0);
    expect(advanceHold(rw, r, true, T + 1000) & HOLDS).toBe(0); // not a new edge
    advanceHold(rw, r, false, T + 2000);
    expect(advanceHold(rw, r, true, T + 3000) & HOLDS).toBe(HOLDS); // second edge within 1 min
    advanceHold(rw, r, false, T + 4000);
    expect(advanceHold(rw, r, true, T + 200_000) & HOLDS).toBe(0); // the earlier edges fell out of the window
  });
});

describe('composite, event and absence units', () => {
  const comp = rule(`id: comp\nwhen: { metric: smoke, above: 0.1, composite: { group: room, min: 2, within: 1m } }`);
  it('a group holds with enough members within the window', () => {
    const g = { ...st(), m: { a: T, b: T - 30_000 }, k: ['a', 'b', 'c'] };
    expect(groupHolds(comp, g, T)).toBe(true);
    expect(groupHolds(comp, g, T + 40_000)).toBe(false);
    const dev: DeviceInfo = { gatewayId: 'gw-1', deviceId: 'a', orgPath: SITE, building: 'B1', room: '101' };
    expect(groupOf(comp, { gatewayId: 'gw-1', orgPath: SITE, device: dev }, 'a')).toBe('room:B1/101');
  });
  it('event where: every field equal', () => {
    expect(matchesWhere({ list: 'watch' }, { list: 'watch', x: 1 })).toBe(true);
    expect(matchesWhere({ list: 'watch' }, { list: 'vip' })).toBe(false);
    expect(matchesWhere({}, {})).toBe(true);
  });
  it('absence: raise counts silence only since watching began; clear needs recent data', () => {
    const w = { kind: 'absence' as const, forMs: null, factor: 3, offline: true };
    const dev: DeviceInfo = { gatewayId: 'gw-1', deviceId: 'd1', orgPath: SITE, expectedIntervalMs: 60_000, watchedSince: T };
    expect(silence(w, dev, T - 3_600_000, T + 60_000)).toMatchObject({ limit: 180_000, silent: true, raiseNow: false });
    expect(silence(w, dev, T - 3_600_000, T + 181_000)).toMatchObject({ silent: true, raiseNow: true });
    expect(silence(w, { ...dev, state: 'offline' }, T, T)).toMatchObject({ offline: true, raiseNow: true });
  });
});

describe('key store', () => {
  it('restores old `a: 1` latches as raised, with their keys on the tick list, per site', () => {
    const k = new KeyStore(new SeqGuard());
    k.restore({ v: 1, states: { 'r|gw-1|d1': { o: SITE, g: 'gw-1', d: 'd1', a: 1 } }, seen: { 'gw-1/d1': { o: SITE, t: T } } });
    const s = k.get('r|gw-1|d1')!;
    expect(latchOf(s).state).toBe('raised');
    expect(latched(s)).toBe(true);
    expect([...k.timed]).toEqual(['r|gw-1|d1']);
    expect(Object.keys(k.collect('other').states)).toEqual([]);
    expect(k.collect(SITE).seen).toEqual({ 'gw-1/d1': { o: SITE, t: T } });
    k.restore({ v: 2 } as never); // an unknown version is ignored
    expect(k.states.size).toBe(1);
  });
});
