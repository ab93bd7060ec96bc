// STUB of the rule engine's per-series seq guard, until rules/engine.ts has its own (branch
// wip-engine adds it; then delete this file and its one call in alerting.ts). The contract both
// keep: a reading / event whose seq is <= the highest seq already evaluated for the same
// (gateway, device, metric / event type) is skipped, and that mark is part of the site's rule
// state, saved in `rule_state` with the alerts it caused. So a record redelivered after a crash
// (its alert committed, its receipt not sent) evaluates to nothing.
// Kept minimal: a wrapper over the engine's public API, its marks in the snapshot under
// `stubSeqGuard` (a key the engine ignores).
import type { EngineSnapshot, RuleEngine } from '../../rules/index.ts';

type Marks = Record<string, number>;

export function withSeqGuardStub(inner: RuleEngine, saved: readonly { site: string; state: EngineSnapshot }[]): RuleEngine {
  const high = new Map<string, number>();
  const bySite = new Map<string, Set<string>>();
  const dirty = new Set<string>();
  const mark = (site: string, key: string, seq: number) => {
    high.set(key, seq);
    let s = bySite.get(site);
    if (!s) bySite.set(site, (s = new Set()));
    s.add(key);
  };
  for (const { site, state } of saved) for (const [k, seq] of Object.entries((state as { stubSeqGuard?: Marks }).stubSeqGuard ?? {})) mark(site, k, seq);
  /** true when this seq was evaluated before (skip it) */
  const seen = (site: string, key: string, seq: number) => {
    const h = high.get(key);
    if (h !== undefined && seq <= h) return true;
    mark(site, key, seq);
    dirty.add(site);
    return false;
  };
  const none = { transitions: [], faults: [] };
  const g = Object.create(inner) as RuleEngine;
  g.onReading = (r, ctx) => (seen(ctx.orgPath, `${ctx.gatewayId}|${r.device}|m:${r.metric}`, r.seq) ? none : inner.onReading(r, ctx));
  g.onEvent = (e, ctx) => (seen(ctx.orgPath, `${ctx.gatewayId}|${e.device}|e:${e.type}`, e.seq) ? none : inner.onEvent(e, ctx));
  g.snapshotJson = (site) => {
    const o = JSON.parse(inner.snapshotJson(site)) as EngineSnapshot & { stubSeqGuard?: Marks };
    o.stubSeqGuard = Object.fromEntries([...(bySite.get(site) ?? [])].map((k) => [k, high.get(k)!]));
    return JSON.stringify(o);
  };
  g.takeDirtySites = () => {
    const out = new Set([...inner.takeDirtySites(), ...dirty]);
    dirty.clear();
    return [...out];
  };
  return g;
}
