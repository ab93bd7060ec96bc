// The engine's per-site state: key states (one per rule and device or group), the last data per
// device (absence rules) and the seq guard's marks; which keys need ticks; which sites changed
// since the alerting tier last saved. Snapshot and restore are plain JSON, per site.
import { setLatch, latchOf, needsTicks, type KeyState } from './key-state.ts';
import { SeqGuard, type SeqSnapshotEntry } from './seq-guard.ts';

export interface EngineSnapshot {
  v: 1;
  states: Record<string, KeyState>;
  /** last data per `gateway/device` (absence rules) */
  seen: Record<string, { o: string; t: number }>;
  /** seq guard: highest seq evaluated per series, per `gateway/device` (absent in older snapshots) */
  seq?: Record<string, SeqSnapshotEntry>;
}

function addTo(m: Map<string, Set<string>>, site: string, key: string): void {
  let set = m.get(site);
  if (!set) m.set(site, (set = new Set()));
  set.add(key);
}

export class KeyStore {
  readonly states = new Map<string, KeyState>();
  /** keys per site, so saving one site's state does not walk every site's */
  private bySite = new Map<string, Set<string>>();
  readonly seen = new Map<string, { o: string; t: number }>();
  private seenBySite = new Map<string, Set<string>>();
  /** keys that need attention on ticks (pending durations, clears, latch holds) */
  readonly timed = new Set<string>();
  private dirty = new Set<string>();

  constructor(readonly guard: SeqGuard) {}

  get(key: string): KeyState | undefined {
    return this.states.get(key);
  }

  /** The state of `key`, created (armed, empty) when new. */
  ensure(key: string, o: string, g: string, d: string): KeyState {
    let st = this.states.get(key);
    if (!st) {
      this.states.set(key, (st = { o, g, d }));
      addTo(this.bySite, o, key);
    }
    return st;
  }

  touch(site: string): void {
    this.dirty.add(site);
  }

  takeDirty(): string[] {
    const l = [...this.dirty];
    this.dirty.clear();
    return l;
  }

  /** data from a device at `ts` (absence rules read it) */
  noteSeen(site: string, gatewayId: string, device: string, ts: number): void {
    const k = gatewayId + '/' + device;
    const cur = this.seen.get(k);
    if (!cur) {
      this.seen.set(k, { o: site, t: ts });
      addTo(this.seenBySite, site, k);
      this.dirty.add(site);
    } else if (cur.t < ts) {
      cur.t = ts;
      this.dirty.add(site);
    }
  }

  /** after a reload, or a restore: every key that may need a tick is in the tick set */
  retime(): void {
    for (const [k, st] of this.states) if (needsTicks(st)) this.timed.add(k);
  }

  collect(site: string | undefined): EngineSnapshot {
    const out: EngineSnapshot = { v: 1, states: {}, seen: {}, seq: this.guard.collect(site) };
    if (site === undefined) {
      for (const [k, st] of this.states) out.states[k] = st;
      for (const [k, v] of this.seen) out.seen[k] = v;
      return out;
    }
    for (const k of this.bySite.get(site) ?? []) {
      const st = this.states.get(k);
      if (st) out.states[k] = st;
    }
    for (const k of this.seenBySite.get(site) ?? []) {
      const v = this.seen.get(k);
      if (v) out.seen[k] = v;
    }
    return out;
  }

  /** merge saved state; snapshots of an unknown version are ignored */
  restore(s: EngineSnapshot): void {
    if (!s || s.v !== 1) return;
    for (const [k, st] of Object.entries(s.states ?? {})) {
      this.states.set(k, st);
      addTo(this.bySite, st.o, k);
      if (st.a && !st.ls) setLatch(st, latchOf(st));
      if (needsTicks(st)) this.timed.add(k);
    }
    for (const [k, v] of Object.entries(s.seen ?? {})) {
      const cur = this.seen.get(k);
      if (!cur || cur.t < v.t) {
        this.seen.set(k, v);
        addTo(this.seenBySite, v.o, k);
      }
    }
    this.guard.restore(s.seq);
  }
}
