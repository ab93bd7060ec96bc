import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import type { DeviceEvent, Reading } from '../contract/index.ts';
import {
  backtest,
  calendarWindows,
  compileRules,
  createRuleEngine,
  DEFAULT_CALENDAR,
  diffLines,
  LIBRARY_DIR,
  parseDuration,
  parseExpr,
  parseSweep,
  type AlertTransition,
  type CompiledRule,
  type EvalContext,
} from './index.ts';

const SCHOOL = '37/3701/370102/3737000001';
const ctx: EvalContext = { gatewayId: 'gw-1', orgPath: SCHOOL };
// Saturday 2026-11-28 10:00 Shanghai = 02:00 UTC; Monday 2026-11-30 09:00 Shanghai (lesson) = 01:00 UTC
const SAT = Date.parse('2026-11-28T02:00:00Z');
const MON_LESSON = Date.parse('2026-11-30T01:00:00Z');
const MON_NIGHT = Date.parse('2026-11-30T14:00:00Z');

function rule(yaml: string): CompiledRule {
  const r = compileRules([{ file: 'test.yaml', text: yaml }]);
  expect(r.errors).toEqual([]);
  return r.rules[0]!;
}
let seq = 0;
const rd = (device: string, metric: string, ts: number, value: number): Reading => ({ seq: ++seq, device, metric, ts, value, quality: 'good' });
const ev = (device: string, type: string, ts: number, data: Record<string, unknown> = {}, drill = false): DeviceEvent => ({ seq: ++seq, device, type, ts, priority: 'alarm', drill, data });
const kinds = (ts: AlertTransition[]) => ts.map((t) => `${t.kind}:${t.ruleId}:${t.deviceId}:${t.severity}`);

const SMOKE = `
id: smoke
name: { zh: 烟雾, en: Smoke }
category: emergency
severity: critical
when: { metric: smoke_density, above: "\${threshold}", for: 10s }
clear: { below: "\${threshold} * 0.7", for: 30s }
severities: [ { above: "\${threshold} * 2", severity: fatal } ]
params: { threshold: 0.15 }
overrides:
  - { scope: "3701", params: { threshold: 0.12 } }
  - { scope: "370102", params: { threshold: 0.11 } }
  - { scope: "3737000001", params: { threshold: 0.10 } }
  - { device: "gw-1/smoke-9", params: { threshold: 0.30 } }
`;

describe('language', () => {
  it('durations and expressions', () => {
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(() => parseDuration(10)).toThrow(/unit/);
    expect(() => parseDuration('ten')).toThrow(/not understood/);
    expect(parseExpr('${t} * 0.7 + 1').eval({ t: 10 })).toBeCloseTo(8);
    expect(parseExpr('(1 + 2) * -3').eval({})).toBe(-9);
    expect(() => parseExpr('${t} *')).toThrow(/unexpected end/);
    expect(() => parseExpr('process.exit()')).toThrow();
  });
  it('sweeps', () => {
    expect(parseSweep('threshold=0.10..0.30:0.02').values).toEqual([0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.22, 0.24, 0.26, 0.28, 0.3]);
    expect(() => parseSweep('threshold=0.3..0.1:0.02')).toThrow(/must not be below/);
  });
  it('diffs', () => {
    expect(diffLines('a\nb\nc', 'a\nB\nc')).toBe('- b\n+ B');
  });
});

describe('compileRules', () => {
  it('compiles the built-in library without errors', () => {
    const docs = readdirSync(LIBRARY_DIR).map((f) => ({ file: f, text: readFileSync(LIBRARY_DIR + f, 'utf8') }));
    const r = compileRules(docs);
    expect(r.errors).toEqual([]);
    expect(r.rules.map((x) => x.id)).toEqual(expect.arrayContaining(['smoke-sustained', 'device-silent', 'gate-forced']));
    expect(r.rules.find((x) => x.id === 'smoke-sustained')!.category).toBe('emergency');
    expect(r.rules.find((x) => x.id === 'device-silent')!.category).toBe('hazard');
  });

  it('reports every error at once, with file, rule and path', () => {
    const r = compileRules([
      { file: 'a.yaml', text: 'id: a-1\nname: { zh: 甲, en: A }\ncategory: hazard\nseverity: minor\nwhen: { metric: x, above: "${t} *", for: 10 }\n' },
      { file: 'b.yaml', text: 'id: b-1\nname: { zh: 乙, en: B }\ncategory: hazard\nseverity: loud\nwhen: { metric: x, above: 1 }\n' },
      { file: 'c.yaml', text: 'id: c-1\nname: { zh: 丙, en: C }\ncategory: hazard\nseverity: minor\nwhen: { metric: x, above: "${t}" }\nactions: [ { release-gates: building } ]\noverrides: [ { scope: "3799x", params: { q: 1 } } ]\n' },
      { file: 'd.yaml', text: 'id: d-1\nname: { zh: 丁, en: D }\ncategory: emergency\nseverity: minor\nwhen: { event: gate.forced_open }\nactions: [ { lock-gates: building } ]\n' },
      { file: 'e.yaml', text: 'id: [unclosed\n' },
    ]);
    const at = r.errors.map((e) => `${e.file}|${e.rule}|${e.path}`);
    expect(at).toEqual(
      expect.arrayContaining([
        'a.yaml|a-1|when.for',
        'b.yaml|b-1|severity',
        'c.yaml|c-1|params',
        'c.yaml|c-1|actions',
        'c.yaml|c-1|overrides[0].params.q',
        'c.yaml|c-1|overrides[0].scope',
        'd.yaml|d-1|actions[0]',
      ]),
    );
    expect(r.errors.some((e) => e.file === 'e.yaml' && /YAML/.test(e.message))).toBe(true);
    expect(r.errors.find((e) => e.path === 'actions[0]')!.message).toMatch(/lock/);
    expect(r.rules).toEqual([]);
  });

  it('refuses duplicate ids and unknown calendars', () => {
    const one = 'id: x\nname: { zh: x, en: x }\ncategory: hazard\nseverity: minor\nwhen: { event: a.b }\nschedule: { calendar: nope, during: [after-hours] }\n';
    const r = compileRules([{ file: '1.yaml', text: one }, { file: '2.yaml', text: one }]);
    expect(r.errors.map((e) => e.path)).toEqual(expect.arrayContaining(['id', 'schedule.calendar']));
  });
});

describe('engine', () => {
  it('threshold for a duration, worse reading raises severity, hysteretic clear', () => {
    const e = createRuleEngine([rule(SMOKE)]);
    const c2 = { ...ctx, orgPath: '37/3702/370202/3737000009' }; // Qingdao: province default 0.15
    const out: AlertTransition[] = [];
    for (let i = 0; i <= 10; i++) out.push(...e.onReading(rd('s', 'smoke_density', SAT + i * 1000, 0.16), c2).transitions);
    expect(kinds(out)).toEqual(['raised:smoke:s:critical']);
    expect(kinds(e.onReading(rd('s', 'smoke_density', SAT + 11_000, 0.31), c2).transitions)).toEqual(['worsened:smoke:s:fatal']);
    // between clear level (0.105) and threshold: stays open
    expect(e.onReading(rd('s', 'smoke_density', SAT + 12_000, 0.12), c2).transitions).toEqual([]);
    expect(e.onReading(rd('s', 'smoke_density', SAT + 13_000, 0.1), c2).transitions).toEqual([]);
    expect(e.onReading(rd('s', 'smoke_density', SAT + 30_000, 0.1), c2).transitions).toEqual([]);
    expect(kinds(e.onReading(rd('s', 'smoke_density', SAT + 43_000, 0.1), c2).transitions)).toEqual(['cleared:smoke:s:fatal']);
  });

  it('a duration completes on a tick without new readings (deadband)', () => {
    const e = createRuleEngine([rule(SMOKE)]);
    const c2 = { ...ctx, orgPath: '37/3702/370202/3737000009' };
    expect(e.onReading(rd('s', 'smoke_density', SAT, 0.2), c2).transitions).toEqual([]);
    expect(e.onTick(SAT + 9000).transitions).toEqual([]);
    expect(kinds(e.onTick(SAT + 10_000).transitions)).toEqual(['raised:smoke:s:critical']);
    e.onReading(rd('s', 'smoke_density', SAT + 11_000, 0.01), c2);
    expect(kinds(e.onTick(SAT + 41_000).transitions)).toEqual(['cleared:smoke:s:critical']);
  });

  it('overrides by scope: province → city → county → school → device', () => {
    const r = rule(SMOKE);
    const at = (orgPath: string, device: string, v: number) => {
      const e = createRuleEngine([r]);
      const c = { gatewayId: 'gw-1', orgPath };
      e.onReading(rd(device, 'smoke_density', SAT, v), c);
      return e.onReading(rd(device, 'smoke_density', SAT + 10_000, v), c).transitions.length;
    };
    expect(at('37/3702/370202/3737000009', 'a', 0.13)).toBe(0); // default 0.15
    expect(at('37/3701/370103/3737000002', 'a', 0.13)).toBe(1); // city 0.12
    expect(at('37/3701/370102/3737000003', 'a', 0.115)).toBe(1); // county 0.11
    expect(at('37/3701/370103/3737000002', 'a', 0.115)).toBe(0);
    expect(at(SCHOOL, 'a', 0.105)).toBe(1); // school 0.10
    expect(at(SCHOOL, 'smoke-9', 0.25)).toBe(0); // device 0.30
  });

  it('repeating, rate of change and range', () => {
    const repeat = rule('id: r\nname: { zh: r, en: r }\ncategory: hazard\nseverity: minor\nwhen: { metric: door_open, above: 0.5, count: 3, within: 1m }\n');
    const rate = rule('id: q\nname: { zh: q, en: q }\ncategory: hazard\nseverity: major\nwhen: { metric: temperature, rate: { above: 5, per: 1m } }\n');
    const range = rule('id: g\nname: { zh: g, en: g }\ncategory: hazard\nseverity: minor\nwhen: { metric: pressure, outside: [0.1, 0.6], for: 0s }\n');
    const e = createRuleEngine([repeat, rate, range]);
    const out: AlertTransition[] = [];
    let t = SAT;
    for (const v of [1, 0, 1, 0]) out.push(...e.onReading(rd('d', 'door_open', (t += 5000), v), ctx).transitions);
    expect(out).toEqual([]);
    out.push(...e.onReading(rd('d', 'door_open', (t += 5000), 1), ctx).transitions);
    expect(kinds(out)).toEqual(['raised:r:d:minor']);
    expect(e.onReading(rd('t', 'temperature', SAT, 20), ctx).transitions).toEqual([]);
    expect(e.onReading(rd('t', 'temperature', SAT + 30_000, 22), ctx).transitions).toEqual([]); // 4/min
    expect(kinds(e.onReading(rd('t', 'temperature', SAT + 60_000, 26), ctx).transitions)).toEqual(['raised:q:t:major']); // 8/min
    expect(e.onReading(rd('p', 'pressure', SAT, 0.3), ctx).transitions).toEqual([]);
    expect(kinds(e.onReading(rd('p', 'pressure', SAT + 1, 0.05), ctx).transitions)).toEqual(['raised:g:p:minor']);
    expect(kinds(e.onReading(rd('p', 'pressure', SAT + 2, 0.3), ctx).transitions)).toEqual(['cleared:g:p:minor']);
  });

  it('absence: silent past the expected interval, offline, and back', () => {
    const r = rule('id: silent\nname: { zh: s, en: s }\ncategory: hazard\nseverity: major\nwhen: { absent: { factor: 3 } }\n');
    const e = createRuleEngine([r]);
    const dev = { gatewayId: 'gw-1', deviceId: 't', orgPath: SCHOOL, expectedIntervalMs: 10_000, lastSeen: SAT, state: 'online' };
    expect(e.onTick(SAT + 30_000, [dev]).transitions).toEqual([]);
    expect(kinds(e.onTick(SAT + 30_001, [dev]).transitions)).toEqual(['raised:silent:t:major']);
    expect(e.onTick(SAT + 40_000, [dev]).transitions).toEqual([]); // one open alert
    expect(kinds(e.onReading(rd('t', 'temperature', SAT + 41_000, 20), ctx).transitions)).toEqual(['cleared:silent:t:major']);
    const off = { ...dev, lastSeen: SAT + 41_000, state: 'offline' };
    const t = e.onTick(SAT + 42_000, [off]).transitions;
    expect(t[0]!.eventType).toBe('device.offline');
    expect(kinds(e.onTick(SAT + 43_000, [{ ...off, state: 'online' }]).transitions)).toEqual(['cleared:silent:t:major']);
  });

  it('absence counts silence only since watching began (a platform restart is not the device going silent)', () => {
    const r = rule('id: silent\nname: { zh: s, en: s }\ncategory: hazard\nseverity: major\nwhen: { absent: { factor: 3 } }\n');
    const e = createRuleEngine([r]);
    const restartedAt = SAT + 3_600_000;
    const old = { gatewayId: 'gw-1', deviceId: 'old', orgPath: SCHOOL, expectedIntervalMs: 10_000, lastSeen: SAT, watchedSince: restartedAt };
    const never = { ...old, deviceId: 'never', lastSeen: null };
    expect(e.onTick(restartedAt + 1000, [old, never]).transitions).toEqual([]);
    expect(kinds(e.onTick(restartedAt + 30_001, [old, never]).transitions)).toEqual(['raised:silent:old:major', 'raised:silent:never:major']);
  });

  it('events: match with where, drill flag, clear event and quiet clear', () => {
    const r = rule('id: forced\nname: { zh: f, en: f }\ncategory: emergency\nseverity: major\nwhen: { event: gate.forced_open, where: { door: main } }\nclear: { event: gate.closed, quiet: 5m }\n');
    const e = createRuleEngine([r]);
    expect(e.onEvent(ev('g', 'gate.forced_open', SAT, { door: 'side' }), ctx).transitions).toEqual([]);
    const raised = e.onEvent(ev('g', 'gate.forced_open', SAT, { door: 'main' }, true), ctx).transitions;
    expect(raised.map((x) => [x.kind, x.drill, x.eventType])).toEqual([['raised', true, 'gate.forced_open']]);
    expect(kinds(e.onEvent(ev('g', 'gate.closed', SAT + 1000), ctx).transitions)).toEqual(['cleared:forced:g:major']);
    e.onEvent(ev('g', 'gate.forced_open', SAT + 2000, { door: 'main' }), ctx);
    expect(e.onTick(SAT + 2000 + 299_000).transitions).toEqual([]);
    expect(kinds(e.onTick(SAT + 2000 + 300_000).transitions)).toEqual(['cleared:forced:g:major']);
  });

  it('schedule with the school calendar: after hours, weekends, holidays, terms', () => {
    const r = rule('id: night\nname: { zh: n, en: n }\ncategory: hazard\nseverity: minor\nwhen: { event: onvif.motion }\nschedule: { during: [after-hours] }\nclear: { quiet: 1m }\n');
    const cals = compileRules([{ file: 'c.yaml', text: 'kind: calendar\nid: default\nscope: "37/3701/370102"\nlessons: ["08:00-11:50", "14:00-17:30"]\nterms: [ { from: 2026-09-01, to: 2027-01-22 } ]\nholidays: ["2026-10-01..2026-10-07"]\nworkdays: ["2026-10-10"]\n' }]).calendars;
    const e = createRuleEngine([r], { calendars: cals });
    expect(e.onEvent(ev('c', 'onvif.motion', MON_LESSON), ctx).transitions).toEqual([]);
    expect(e.onEvent(ev('c', 'onvif.motion', MON_NIGHT), ctx).transitions).toHaveLength(1);
    const cal = cals[0]!;
    const w = (iso: string) => [...calendarWindows(cal, Date.parse(iso))].sort();
    expect(w('2026-11-28T02:00:00Z')).toEqual(['after-hours', 'non-school-day', 'term', 'weekend']);
    expect(w('2026-10-02T02:00:00Z')).toEqual(['after-hours', 'holiday', 'non-school-day', 'term']);
    expect(w('2026-10-10T02:00:00Z')).toEqual(['lesson-hours', 'school-day', 'term']); // Saturday make-up day
    expect(w('2027-02-01T02:00:00Z')).toEqual(['after-hours', 'non-school-day', 'vacation']);
    expect(calendarWindows(DEFAULT_CALENDAR, MON_LESSON).has('lesson-hours')).toBe(true);
  });

  it('composite: at least two devices of the same room within a window', () => {
    const r = rule('id: two\nname: { zh: t, en: t }\ncategory: emergency\nseverity: critical\nwhen: { metric: smoke_density, above: 0.1, composite: { group: room, min: 2, within: 1m } }\nclear: { below: 0.05 }\n');
    const e = createRuleEngine([r]);
    const room = (d: string, room: string) => ({ ...ctx, device: { gatewayId: 'gw-1', deviceId: d, orgPath: SCHOOL, building: 'A', room } });
    expect(e.onReading(rd('a', 'smoke_density', SAT, 0.2), room('a', '101')).transitions).toEqual([]);
    expect(e.onReading(rd('c', 'smoke_density', SAT + 1000, 0.2), room('c', '102')).transitions).toEqual([]);
    const t = e.onReading(rd('b', 'smoke_density', SAT + 2000, 0.2), room('b', '101')).transitions;
    expect(t.map((x) => [x.kind, x.key])).toEqual([['raised', 'two|gw-1|room:A/101']]);
    expect(e.onReading(rd('a', 'smoke_density', SAT + 3000, 0.01), room('a', '101')).transitions.map((x) => x.kind)).toEqual(['cleared']);
  });

  it('state saved per site and restored: no re-raise, no forgetting', () => {
    const r = rule(SMOKE);
    const c2 = { ...ctx, orgPath: '37/3702/370202/3737000009' };
    const e1 = createRuleEngine([r]);
    e1.onReading(rd('s', 'smoke_density', SAT, 0.2), c2);
    expect(e1.onReading(rd('s', 'smoke_density', SAT + 10_000, 0.2), c2).transitions).toHaveLength(1);
    expect(e1.takeDirtySites()).toEqual([c2.orgPath]);
    const saved = JSON.parse(JSON.stringify(e1.snapshot(c2.orgPath)));
    expect(Object.keys(e1.snapshot(SCHOOL).states)).toEqual([]);
    const e2 = createRuleEngine([r], { state: saved });
    expect(e2.onReading(rd('s', 'smoke_density', SAT + 20_000, 0.2), c2).transitions).toEqual([]);
    e2.onReading(rd('s', 'smoke_density', SAT + 21_000, 0.01), c2);
    expect(kinds(e2.onReading(rd('s', 'smoke_density', SAT + 51_000, 0.01), c2).transitions)).toEqual(['cleared:smoke:s:critical']);
  });

  it('a rule that fails is its own fault unit', () => {
    const bad = { ...rule(SMOKE), id: 'bad', params: {}, overrides: [] };
    const good = rule(SMOKE.replace('id: smoke', 'id: good'));
    const e = createRuleEngine([bad, good]);
    const c2 = { ...ctx, orgPath: '37/3702/370202/3737000009' };
    e.onReading(rd('s', 'smoke_density', SAT, 0.2), c2);
    const res = e.onReading(rd('s', 'smoke_density', SAT + 10_000, 0.2), c2);
    expect(res.faults[0]!.ruleId).toBe('bad');
    expect(kinds(res.transitions)).toEqual(['raised:good:s:critical']);
  });
});

describe('backtest', () => {
  it('replays history per threshold value', () => {
    const r = rule(SMOKE);
    const recs = [0.05, 0.12, 0.12, 0.18, 0.18, 0.25, 0.25].flatMap((v, i) =>
      Array.from({ length: 15 }, (_, k) => ({ kind: 'reading' as const, gatewayId: 'gw-1', orgPath: '37/3702/370202/3737000009', reading: rd('s', 'smoke_density', SAT + i * 120_000 + k * 1000, v) })),
    );
    const res = backtest(r, recs, { sweep: parseSweep('threshold=0.10..0.30:0.10') });
    expect(res.map((x) => [x.value, x.alerts.length])).toEqual([[0.1, 1], [0.2, 1], [0.3, 0]]);
    expect(res[1]!.alerts[0]!.raisedAt).toBe(SAT + 5 * 120_000 + 10_000);
    expect(() => backtest(r, recs, { sweep: parseSweep('nope=1..2:1') })).toThrow(/no parameter/);
  });
});
