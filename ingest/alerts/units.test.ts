// The alerting's units alone: no database, no broker.
import { describe, expect, it } from 'vitest';
import { silentLogger, systemClock, type DeviceEvent, type Reading } from '../../contract/index.ts';
import { compileRules, createRuleEngine, type AlertTransition, type EngineSnapshot } from '../../rules/index.ts';
import type { ArrivedBatch } from '../types.ts';
import { Ticker } from './ticker.ts';
import { WorkQueue } from './work-queue.ts';

const flush = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};
const GW = { id: 'gw-1', orgPath: '37/3701/370102/3737000001', county: '370102' };
const batch = (name: string): ArrivedBatch => ({ gateway: GW, readings: [], events: [{ seq: 1, device: name, type: 'x', ts: 0, priority: 'alarm', drill: false, data: {} } as DeviceEvent] });
const transition = (device: string) => ({ deviceId: device }) as AlertTransition;

describe('WorkQueue', () => {
  it('resolves a batch only once its transitions are committed, however late that is', async () => {
    let commitLater!: () => void;
    const q = new WorkQueue({
      evaluate: async (b) => [transition(b.events[0]!.device)],
      apply: async (_ts, done) => void (commitLater = done), // the commit failed: parked for the next tick
    });
    let resolved = false;
    const p = q.batch('urgent', batch('smoke-1'), 'events').then(() => (resolved = true));
    await flush();
    expect(resolved).toBe(false);
    commitLater();
    await p;
    expect(resolved).toBe(true);
  });

  it('evaluates and commits an alarm before the bulk readings queued ahead of it', async () => {
    const order: string[] = [];
    const q = new WorkQueue({
      evaluate: async (b) => (order.push(`eval ${b.events[0]!.device}`), [transition(b.events[0]!.device)]),
      apply: async (ts, done) => (order.push(`commit ${ts.map((t) => t.deviceId).join(',')}`), done()),
    });
    const jobs = [q.batch('bulk', batch('temp-1'), 'readings'), q.batch('bulk', batch('temp-2'), 'readings'), q.batch('urgent', batch('smoke-1'), 'events')];
    await Promise.all(jobs);
    // temp-1 was taken before the alarm arrived; the alarm goes next, temp-2 after it
    expect(order.indexOf('eval smoke-1')).toBeLessThan(order.indexOf('eval temp-2'));
    expect(order.findIndex((o) => o.includes('smoke-1') && o.startsWith('commit'))).toBeLessThan(order.findIndex((o) => o.includes('temp-2') && o.startsWith('commit')));
  });
});

describe('the engine as alerting restores it: its seq guard survives rule_state', () => {
  const rules = compileRules([{ file: 't.yaml', text: 'id: t50\nname: { zh: 温度, en: Temp }\ncategory: emergency\nseverity: major\nwhen: { metric: temperature, above: 50 }\n' }]).rules;
  const reading = (seq: number, value: number): Reading => ({ seq, device: 'temp-1', metric: 'temperature', ts: 1_764_650_000_000 + seq * 1000, value, quality: 'good' });
  const ctx = { gatewayId: GW.id, orgPath: GW.orgPath, device: undefined, drill: false };

  it('skips a redelivered record, also in an engine restored from the saved state', () => {
    const a = createRuleEngine(rules);
    const run = (e: typeof a, seqs: [number, number][]) => seqs.flatMap(([s, v]) => e.onReading(reading(s, v), ctx).transitions.map((t) => t.kind));
    expect(run(a, [[1, 20], [2, 60]])).toEqual(['raised']);
    expect(run(a, [[1, 20], [2, 60]])).toEqual([]); // redelivered: nothing, not a clear and a second raise
    expect(a.takeDirtySites()).toContain(GW.orgPath);
    // what alerting writes to rule_state and reads back at start (JSON through the database)
    const saved = JSON.parse(a.snapshotJson(GW.orgPath)) as EngineSnapshot;
    const b = createRuleEngine(rules, { state: [saved] });
    expect(run(b, [[1, 20], [2, 60]])).toEqual([]);
    expect(run(b, [[3, 20]])).toEqual(['cleared']); // a new seq is evaluated
  });
});

describe('Ticker', () => {
  it('runs every due step, each its own fault unit', async () => {
    const ran: string[] = [];
    const t = new Ticker([
      { name: 'a', run: async () => void ran.push('a') },
      { name: 'broken', run: async () => { throw new Error('boom'); } },
      { name: 'skipped', due: () => false, run: async () => void ran.push('skipped') },
      { name: 'c', run: async () => void ran.push('c') },
    ], systemClock, silentLogger);
    await t.tick();
    expect(ran).toEqual(['a', 'c']);
  });
});
