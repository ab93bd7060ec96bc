// Which rules a record can concern, looked up without scanning every rule: metric rules by metric
// (and by scope), event rules by event type, clearing events, absence rules. Rebuilt on reload.
import type { CompiledRule } from './types.ts';

export interface RuleIndex {
  byMetric: Map<string, { all: CompiledRule[]; byScope: Map<string, CompiledRule[]> }>;
  byEvent: Map<string, CompiledRule[]>;
  clearByEvent: Map<string, CompiledRule[]>;
  absence: CompiledRule[];
  byId: Map<string, CompiledRule>;
}

function push<K>(m: Map<K, CompiledRule[]>, k: K, r: CompiledRule): void {
  const l = m.get(k);
  if (l) l.push(r);
  else m.set(k, [r]);
}

/** Enabled rules only: a disabled rule is as if absent. */
export function buildIndex(rules: readonly CompiledRule[]): RuleIndex {
  const idx: RuleIndex = { byMetric: new Map(), byEvent: new Map(), clearByEvent: new Map(), absence: [], byId: new Map() };
  for (const r of rules) {
    if (!r.enabled) continue;
    idx.byId.set(r.id, r);
    const w = r.when;
    if (w.kind === 'threshold' || w.kind === 'range' || w.kind === 'rate') {
      let e = idx.byMetric.get(w.metric);
      if (!e) idx.byMetric.set(w.metric, (e = { all: [], byScope: new Map() }));
      if (r.match.scopes.length === 0) e.all.push(r);
      else for (const s of r.match.scopes) push(e.byScope, s, r);
    } else if (w.kind === 'event') {
      for (const t of w.types) push(idx.byEvent, t, r);
      if (r.clear.kind === 'event') for (const t of r.clear.types) push(idx.clearByEvent, t, r);
    } else idx.absence.push(r);
  }
  return idx;
}

/** Does the rule's `match` select this device (scope, profile, device list)? */
export function selects(r: CompiledRule, orgPath: string, gatewayId: string, deviceId: string, profile?: string | null): boolean {
  const m = r.match;
  if (m.scopes.length && !m.scopes.some((s) => orgPath === s || orgPath.startsWith(s + '/'))) return false;
  if (m.profiles.length && !(profile && m.profiles.includes(profile))) return false;
  if (m.devices.length && !m.devices.includes(deviceId) && !m.devices.includes(`${gatewayId}/${deviceId}`)) return false;
  return true;
}

/** An org path and its ancestors (`37/3701/370102` → itself, `37/3701`, `37`), cached and bounded. */
export class AncestorPaths {
  private cache = new Map<string, string[]>();
  constructor(private readonly max = 100_000) {}
  of(orgPath: string): string[] {
    let a = this.cache.get(orgPath);
    if (!a) {
      a = [];
      for (let p = orgPath; ; ) {
        a.push(p);
        const i = p.lastIndexOf('/');
        if (i < 0) break;
        p = p.slice(0, i);
      }
      if (this.cache.size > this.max) this.cache.clear();
      this.cache.set(orgPath, a);
    }
    return a;
  }
}
