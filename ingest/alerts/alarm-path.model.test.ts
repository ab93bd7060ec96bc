// Model-based test of the alarm path (issue 12): random interleavings of readings, events,
// acknowledgements, resolutions, escalations (long ticks), worker restarts, rule edits and drills,
// checked after every step against a small reference model of what the desk must see.
// One command model, two systems under it (one shared suite per interface):
// - the pure engine with the alert latch and an in-memory alert store (thousands of interleavings);
// - the real alerting tier on PGlite (a smaller run: each step is a few SQL statements).
// The probes' findings are seeds (explicit examples) of both.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Clock, DeviceEvent } from '../../contract/index.ts';
import { compileRules, createRuleEngine, type AlertTransition, type EngineSnapshot, type RuleEngine, type RuleSet } from '../../rules/index.ts';
import { createTestDatabase, type TestDatabase } from '../../test/support/databases.ts';
import { scopeOf } from '../scope.ts';
import type { StoredBatch } from '../types.ts';
import { createAlerting, type Alerting } from './index.ts';

const SCHOOL = '37/3701/370102/3737000001';
const GW = 'gw-3737000001';
const T0 = Date.parse('2026-11-30T02:00:00Z');
const desk = scopeOf(SCHOOL);
const DEVICES = ['d0', 'd1'] as const;
const THRESHOLD = 0.15;
const FOR_MS = 10_000;
const QUIET_MS = 5 * 60_000;

/** The rules under test: one of each latch shape. `variant` is a rule edit (same ids, new versions). */
function rules(variant: number): RuleSet {
  const set = compileRules([
    { file: 'wl.yaml', text: `id: wl\nname: { zh: 布控人员, en: Watch-listed visitor v${variant} }\ncategory: emergency\nseverity: critical\nwhen: { event: visitor.watchlist }\n${variant ? 'rearm: { after: 1m }\n' : ''}` },
    { file: 'forced.yaml', text: `id: forced\nname: { zh: 强行开门, en: Forced v${variant} }\ncategory: emergency\nseverity: major\nwhen: { event: gate.forced_open }\nclear: { event: [gate.closed], quiet: 5m }\n` },
    { file: 'smoke.yaml', text: `id: smoke\nname: { zh: 烟雾, en: Smoke v${variant} }\ncategory: emergency\nseverity: critical\nwhen: { metric: smoke_density, above: ${THRESHOLD}, for: 10s }\nclear: { below: 0.1, for: 30s }\n` },
  ]);
  if (set.errors.length) throw new Error(JSON.stringify(set.errors));
  return set;
}
const RULE_SETS = [rules(0), rules(1)];
const keyOf = (rule: string, dev: string) => `${rule}|${GW}|${dev}`;

type Cmd =
  | { k: 'event'; dev: number; type: 'visitor.watchlist' | 'gate.forced_open' | 'gate.closed'; drill: boolean }
  | { k: 'reading'; dev: number; value: number }
  | { k: 'tick'; ms: number }
  | { k: 'ack' | 'resolve'; rule: 'wl' | 'forced' | 'smoke'; dev: number }
  | { k: 'restart' }
  | { k: 'edit'; variant: number }
  | { k: 'stage'; dev: number; on: boolean };

const dev = fc.integer({ min: 0, max: DEVICES.length - 1 });
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ k: fc.constant('event' as const), dev, type: fc.constantFrom('visitor.watchlist' as const, 'gate.forced_open' as const, 'gate.closed' as const), drill: fc.constantFrom(false, false, false, true) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('reading' as const), dev, value: fc.constantFrom(0.05, 0.12, 0.3) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('tick' as const), ms: fc.constantFrom(1000, 5000, 11_000, 40_000, 3 * 60_000, 6 * 60_000, 11 * 60_000) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('ack' as const), rule: fc.constantFrom('wl' as const, 'forced' as const, 'smoke' as const), dev }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('resolve' as const), rule: fc.constantFrom('wl' as const, 'forced' as const, 'smoke' as const), dev }) },
  { weight: 1, arbitrary: fc.constant({ k: 'restart' as const }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('edit' as const), variant: fc.constantFrom(0, 1) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('stage' as const), dev, on: fc.boolean() }) },
);

interface DeskAlert {
  id: string;
  key: string;
  state: 'raised' | 'acknowledged' | 'resolved' | 'cleared';
  drill: boolean;
}

/** What the model drives: the pure engine or the real alerting tier. */
interface System {
  now(): number;
  event(device: string, type: string, drill: boolean): Promise<void>;
  reading(device: string, value: number): Promise<void>;
  tick(ms: number): Promise<void>;
  person(key: string, what: 'ack' | 'resolve'): Promise<void>;
  restart(): Promise<void>;
  edit(variant: number): Promise<void>;
  stage(device: string, on: boolean): Promise<void>;
  alerts(): Promise<DeskAlert[]>;
}

/** The reference: what the desk must see. Deliberately small; no latch, no table. */
class Reference {
  open = new Map<string, boolean>();
  count = new Map<string, number>();
  lastForced = new Map<string, number>();
  aboveSince = new Map<string, number | null>();
  resolvedSmoke = new Set<string>();
  staged = new Set<string>();
  /** drill flag each newly raised alert must carry, by key */
  expectDrill = new Map<string, boolean>();

  occurrence(key: string, drill: boolean) {
    if (this.open.get(key)) return; // the same alert, still open
    this.open.set(key, true);
    this.count.set(key, (this.count.get(key) ?? 0) + 1);
    this.expectDrill.set(key, drill);
  }
  apply(c: Cmd, now: number) {
    if (c.k === 'event') {
      const d = DEVICES[c.dev]!;
      const drill = c.drill || this.staged.has(d);
      if (c.type === 'visitor.watchlist') this.occurrence(keyOf('wl', d), drill);
      else if (c.type === 'gate.forced_open') {
        this.lastForced.set(d, now);
        this.occurrence(keyOf('forced', d), drill);
      } else this.open.set(keyOf('forced', d), false); // gate.closed clears
    } else if (c.k === 'reading') {
      const d = DEVICES[c.dev]!;
      if (c.value > THRESHOLD) this.aboveSince.set(d, this.aboveSince.get(d) ?? now);
      else this.aboveSince.set(d, null);
    } else if (c.k === 'resolve') {
      const d = DEVICES[c.dev]!;
      if (c.rule === 'smoke') this.resolvedSmoke.add(d);
      else this.open.set(keyOf(c.rule, d), false);
    } else if (c.k === 'restart') {
      this.aboveSince.clear(); // a pending duration may start again after a crash: assert nothing about it
    } else if (c.k === 'stage') {
      const d = DEVICES[c.dev]!;
      if (c.on) this.staged.add(d);
      else this.staged.delete(d);
    }
    if (c.k === 'tick' || c.k === 'stage') {
      for (const d of DEVICES) {
        const k = keyOf('forced', d);
        if (this.open.get(k) && now - (this.lastForced.get(d) ?? now) >= QUIET_MS) this.open.set(k, false);
      }
    }
  }
}

/** Run one command sequence against a system, checking the desk after every step. */
async function check(sys: System, cmds: Cmd[]): Promise<void> {
  const ref = new Reference();
  const seen = new Set<string>();
  for (const [i, c] of cmds.entries()) {
    const before = await sys.alerts();
    const openBefore = new Set(before.filter((a) => a.state === 'raised' || a.state === 'acknowledged').map((a) => a.key));
    if (c.k === 'event') await sys.event(DEVICES[c.dev]!, c.type, c.drill);
    else if (c.k === 'reading') await sys.reading(DEVICES[c.dev]!, c.value);
    else if (c.k === 'tick') await sys.tick(c.ms);
    else if (c.k === 'ack' || c.k === 'resolve') await sys.person(keyOf(c.rule, DEVICES[c.dev]!), c.k);
    else if (c.k === 'restart') await sys.restart();
    else if (c.k === 'edit') await sys.edit(c.variant);
    else if (c.k === 'stage') await sys.stage(DEVICES[c.dev]!, c.on);
    ref.apply(c, sys.now());

    const after = await sys.alerts();
    const where = `step ${i} ${JSON.stringify(c)}`;
    const open = after.filter((a) => a.state === 'raised' || a.state === 'acknowledged');
    // at most one open alert per rule and subject
    expect(new Set(open.map((a) => a.key)).size, where).toBe(open.length);
    for (const d of DEVICES) {
      for (const rule of ['wl', 'forced']) {
        const k = keyOf(rule, d);
        // an occurrence while armed raises; after a resolve the next one raises again; nothing lost over restarts
        expect(open.some((a) => a.key === k), `${where}: ${k} open`).toBe(!!ref.open.get(k));
        expect(after.filter((a) => a.key === k).length, `${where}: ${k} alerts`).toBe(ref.count.get(k) ?? 0);
      }
      const sk = keyOf('smoke', d);
      const since = ref.aboveSince.get(d);
      // a sustained density the desk never resolved is on the desk
      if (c.k === 'tick' && since != null && sys.now() - since >= FOR_MS && !ref.resolvedSmoke.has(d)) expect(open.some((a) => a.key === sk), `${where}: ${sk} open`).toBe(true);
      // a new smoke alert only when none was open (no second alert for one condition, restarts included)
      const newSmoke = after.filter((a) => a.key === sk && !seen.has(a.id));
      expect(newSmoke.length, `${where}: ${sk} new`).toBeLessThanOrEqual(1);
      if (newSmoke.length) {
        expect(openBefore.has(sk), `${where}: ${sk} raised while open`).toBe(false);
        expect(newSmoke[0]!.drill, `${where}: ${sk} drill`).toBe(ref.staged.has(d));
      }
    }
    // the drill flag of every new alert is its source's: the record's own flag or a staged device
    for (const a of after) {
      if (seen.has(a.id)) continue;
      seen.add(a.id);
      if (!a.key.startsWith('smoke|')) expect(a.drill, `${where}: drill of ${a.key}`).toBe(ref.expectDrill.get(a.key));
    }
  }
}

// ---- system 1: the pure engine, the latch, and an in-memory alert store ----
function pureSystem(): System {
  let now = T0;
  let variant = 0;
  const staged = new Set<string>();
  const alerts: DeskAlert[] = [];
  let persisted: EngineSnapshot | null = null;
  let engine: RuleEngine = createRuleEngine(RULE_SETS[0]!.rules);
  let n = 0;
  const openOf = (key: string) => alerts.find((a) => a.key === key && (a.state === 'raised' || a.state === 'acknowledged'));
  // what alerting.applyOne does with each transition; the state is saved with them (one transaction)
  const apply = (ts: AlertTransition[]) => {
    for (const t of ts) {
      const open = openOf(t.key);
      if (t.kind === 'raised' || t.kind === 'retriggered') {
        if (!open) alerts.push({ id: `a${++n}`, key: t.key, state: 'raised', drill: t.drill });
      } else if (t.kind === 'cleared' && open) open.state = 'cleared';
    }
    if (ts.length) persisted = engine.snapshot();
  };
  const ctx = (d: string) => ({ gatewayId: GW, orgPath: SCHOOL, drill: staged.has(d) });
  let seq = 0;
  return {
    now: () => now,
    async event(d, type, drill) {
      now += 1000;
      apply(engine.onEvent({ seq: ++seq, device: d, type, ts: now, priority: 'alarm', drill, data: {} }, ctx(d)).transitions);
    },
    async reading(d, value) {
      now += 1000;
      apply(engine.onReading({ seq: ++seq, device: d, metric: 'smoke_density', ts: now, value, quality: 'good' }, ctx(d)).transitions);
    },
    async tick(ms) {
      now += ms;
      apply(engine.onTick(now, [], new Set([...staged].map((d) => `${GW}/${d}`))).transitions);
    },
    async person(key, what) {
      const open = openOf(key);
      if (!open || (what === 'ack' && open.state !== 'raised')) return;
      open.state = what === 'ack' ? 'acknowledged' : 'resolved';
      if (engine.person(key, what, now)) persisted = engine.snapshot();
    },
    async restart() {
      // a crash: what was saved with the last alert change is what comes back
      engine = createRuleEngine(RULE_SETS[variant]!.rules, { state: persisted ? (JSON.parse(JSON.stringify(persisted)) as EngineSnapshot) : undefined });
      const open = new Map(alerts.filter((a) => a.state === 'raised' || a.state === 'acknowledged').map((a) => [a.key, a.state as 'raised' | 'acknowledged']));
      engine.reconcile(open);
    },
    async edit(v) {
      variant = v;
      engine.setRules(RULE_SETS[v]!.rules);
    },
    async stage(d, on) {
      if (on) staged.add(d);
      else staged.delete(d);
      await this.tick(0);
    },
    alerts: async () => alerts.map((a) => ({ ...a })),
  };
}

// ---- system 2: the real alerting tier on PGlite ----
function fakeClock(start: number): Clock & { advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms), setTimeout: () => 0, clearTimeout: () => {}, setInterval: () => 0, clearInterval: () => {} };
}

async function realSystem(tdb: TestDatabase, gw: string): Promise<System & { stop(): Promise<void> }> {
  const clock = fakeClock(T0);
  let variant = 0;
  const start = () => createAlerting({ db: tdb.db, rules: RULE_SETS[variant]!, clock, tickMs: 0, deliverOnChange: false, stateSaveMs: 0 });
  let alerting: Alerting = await start();
  let seq = 0;
  const batch = (d: string, body: Pick<StoredBatch, 'readings' | 'events'>): StoredBatch => ({ gateway: { id: gw, orgPath: SCHOOL, county: '370102' }, ...body });
  const toModelKey = (k: string) => k.replace(`|${gw}|`, `|${GW}|`);
  return {
    now: () => clock.now(),
    async event(d, type, drill) {
      clock.advance(1000);
      await alerting.listener.onStored(batch(d, { readings: [], events: [{ seq: ++seq, device: d, type, ts: clock.now(), priority: 'alarm', drill, data: {} } as DeviceEvent] }));
    },
    async reading(d, value) {
      clock.advance(1000);
      await alerting.listener.onStored(batch(d, { events: [], readings: [{ seq: ++seq, device: d, metric: 'smoke_density', ts: clock.now(), value, quality: 'good' }] }));
    },
    async tick(ms) {
      clock.advance(ms);
      await alerting.tick(); // durations, quiet clears, holds, escalation
    },
    async person(k, what) {
      const [ruleId, , d] = k.split('|');
      // this run's gateway only: the runs share one database and the desk's scope is the whole school,
      // so another run's open alert for the same rule and device id may sort first
      const [a] = await alerting.list(desk, { gatewayId: gw, ruleId, deviceId: d, state: 'open' });
      if (!a || (what === 'ack' && a.state !== 'raised')) return;
      await (what === 'ack' ? alerting.acknowledge(desk, a.id, 'desk') : alerting.resolve(desk, a.id, 'desk'));
    },
    async restart() {
      await alerting.stop();
      alerting = await start();
    },
    async edit(v) {
      variant = v;
      alerting.setRules(RULE_SETS[v]!);
    },
    async stage(d, on) {
      if (on) await alerting.startDrill(desk, SCHOOL, 600, 'desk', [`${gw}/${d}`]);
      else await tdb.db.query(`update drills set ends_at = to_timestamp($1::float8 / 1000) where $2 = any(devices) and ends_at > to_timestamp($1::float8 / 1000)`, [clock.now(), `${gw}/${d}`]);
      await alerting.tick();
    },
    async alerts() {
      const l = await alerting.list(desk, { limit: 5000 });
      return l.filter((a) => a.gatewayId === gw).map((a) => ({ id: a.id, key: toModelKey(`${a.ruleId}|${gw}|${a.deviceId}`), state: a.state as DeskAlert['state'], drill: a.drill }));
    },
    stop: () => alerting.stop(),
  };
}

// The probes' findings, as explicit seeds of both runs.
const SEEDS: Cmd[][] = [
  // Lost: resolve a watch-list alert; the next watch-listed visitor must raise again, restarts included
  [{ k: 'event', dev: 0, type: 'visitor.watchlist', drill: false }, { k: 'resolve', rule: 'wl', dev: 0 }, { k: 'event', dev: 0, type: 'visitor.watchlist', drill: false },
   { k: 'resolve', rule: 'wl', dev: 0 }, { k: 'restart' }, { k: 'event', dev: 0, type: 'visitor.watchlist', drill: false }],
  // Masked: a drill stages d1; a real hit and a real smoke alarm on d0 stay real; d1's smoke is a drill
  [{ k: 'stage', dev: 1, on: true }, { k: 'event', dev: 0, type: 'visitor.watchlist', drill: false }, { k: 'reading', dev: 0, value: 0.3 }, { k: 'tick', ms: 11_000 },
   { k: 'reading', dev: 1, value: 0.3 }, { k: 'tick', ms: 11_000 }, { k: 'event', dev: 0, type: 'gate.forced_open', drill: true }],
  // a latch outliving its alert: acknowledged, escalated (long ticks), resolved, edited, restarted
  [{ k: 'event', dev: 1, type: 'gate.forced_open', drill: false }, { k: 'ack', rule: 'forced', dev: 1 }, { k: 'tick', ms: 3 * 60_000 }, { k: 'resolve', rule: 'forced', dev: 1 },
   { k: 'edit', variant: 1 }, { k: 'restart' }, { k: 'event', dev: 1, type: 'gate.forced_open', drill: false }, { k: 'tick', ms: 6 * 60_000 }, { k: 'event', dev: 1, type: 'gate.forced_open', drill: false }],
  // the harness's own isolation on PGlite: the first seed leaves wl|d0 open (raised later than this
  // run's); the desk step here must resolve this run's alert, not the earlier run's
  [{ k: 'event', dev: 0, type: 'visitor.watchlist', drill: false }, { k: 'resolve', rule: 'wl', dev: 0 }, { k: 'resolve', rule: 'wl', dev: 1 }],
];

describe('the alarm path against its reference model', () => {
  it('pure engine and latch: a thousand random interleavings of up to 60 steps', async () => {
    for (const seed of SEEDS) await check(pureSystem(), seed);
    await fc.assert(
      fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 60 }), (cmds) => check(pureSystem(), cmds)),
      { numRuns: 1000, examples: SEEDS.map((s) => [s] as [Cmd[]]) },
    );
  }, 60_000);

  describe('the real alerting tier on PGlite', () => {
    let tdb: TestDatabase;
    let run = 0;
    beforeAll(async () => {
      tdb = await createTestDatabase('pglite');
    });
    afterAll(async () => {
      await tdb?.drop();
    });
    const onPglite = async (cmds: Cmd[]) => {
      // each run its own gateway and devices, in one database
      const gw = `gw-model-${++run}`;
      await tdb.db.query(`insert into gateways (id, org_path, county, name, secret_hash, state) values ($1, $2, '370102', 'model', 'x', 'online')`, [gw, SCHOOL]);
      for (const d of DEVICES) await tdb.db.query(`insert into devices (gateway_id, device_id, org_path, profile, state) values ($1, $2, $3, 'model-x', 'online')`, [gw, d, SCHOOL]);
      const sys = await realSystem(tdb, gw);
      try {
        await check(sys, cmds);
      } finally {
        await sys.stop();
      }
    };
    it('the seeds, then random interleavings', async () => {
      for (const seed of SEEDS) await onPglite(seed);
      await fc.assert(fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 25 }), onPglite), { numRuns: 6 });
    }, 120_000);
  });
});
