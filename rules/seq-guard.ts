// The per-series seq guard: delivery is at least once (docs/delivery.md), and the ingest worker
// evaluates rules on arrival, before its storage commit, so a message can come again after a crash.
// The engine evaluates a record only when its `seq` is above the highest seq it has already
// evaluated for the same series: (gateway, device, metric) for readings, (gateway, device, event
// type) for events. Seqs are per gateway and only grow (contract/messages.ts), so a seq at or
// below the mark is a record this engine has seen. Records without a seq (backtests feeding
// history) pass. The marks are part of each site's state, saved with the alerts in one
// transaction, so a restart followed by a redelivery raises nothing new.
//
// Memory is bounded: a series with no record for `horizonMs` (of record time, checked on ticks)
// is forgotten. Steady-state admits allocate nothing: nested maps, marks updated in place.

/** Saved form, per `gateway/device`: site, and [seq, last record time] per metric (r) and event type (e). */
export interface SeqSnapshotEntry {
  o: string;
  r?: Record<string, [number, number]>;
  e?: Record<string, [number, number]>;
}

interface Mark {
  s: number;
  t: number;
}
interface DeviceSeries {
  o: string;
  gd: string;
  r: Map<string, Mark>;
  e: Map<string, Mark>;
}

export const DEFAULT_SEQ_HORIZON_MS = 7 * 24 * 3_600_000;

export class SeqGuard {
  private byGateway = new Map<string, Map<string, DeviceSeries>>();
  private bySite = new Map<string, Set<DeviceSeries>>();
  private lastSweep = -Infinity;

  constructor(readonly horizonMs = DEFAULT_SEQ_HORIZON_MS) {}

  /**
   * Is this record new for its series? Records it as evaluated when so. `kind`: 'r' reading
   * (name = metric), 'e' event (name = event type). No seq: always new, nothing recorded.
   */
  admit(gatewayId: string, site: string, device: string, kind: 'r' | 'e', name: string, seq: number | undefined, ts: number): boolean {
    if (seq === undefined || seq === null) return true;
    const ds = this.series(gatewayId, site, device);
    const marks = kind === 'r' ? ds.r : ds.e;
    const m = marks.get(name);
    if (!m) {
      marks.set(name, { s: seq, t: ts });
      return true;
    }
    if (seq <= m.s) return false;
    m.s = seq;
    if (ts > m.t) m.t = ts;
    return true;
  }

  /** The highest seq evaluated for a series (undefined when unknown). */
  highest(gatewayId: string, device: string, kind: 'r' | 'e', name: string): number | undefined {
    const ds = this.byGateway.get(gatewayId)?.get(device);
    return (kind === 'r' ? ds?.r : ds?.e)?.get(name)?.s;
  }

  /** Forget series without records for the horizon; at most every horizon/24. Returns the sites changed. */
  sweep(now: number): string[] {
    if (now - this.lastSweep < Math.min(this.horizonMs / 24, 3_600_000)) return [];
    this.lastSweep = now;
    const changed = new Set<string>();
    for (const [gw, devices] of this.byGateway) {
      for (const [dev, ds] of devices) {
        for (const marks of [ds.r, ds.e]) for (const [k, m] of marks) if (now - m.t > this.horizonMs) (marks.delete(k), changed.add(ds.o));
        if (ds.r.size === 0 && ds.e.size === 0) {
          devices.delete(dev);
          this.bySite.get(ds.o)?.delete(ds);
        }
      }
      if (devices.size === 0) this.byGateway.delete(gw);
    }
    return [...changed];
  }

  /** Saved form of one site (all sites when omitted). */
  collect(site: string | undefined): Record<string, SeqSnapshotEntry> {
    const out: Record<string, SeqSnapshotEntry> = {};
    const list = site === undefined ? [...this.bySite.values()].flatMap((s) => [...s]) : [...(this.bySite.get(site) ?? [])];
    for (const ds of list) {
      const e: SeqSnapshotEntry = { o: ds.o };
      if (ds.r.size) e.r = Object.fromEntries([...ds.r].map(([k, m]) => [k, [m.s, m.t]]));
      if (ds.e.size) e.e = Object.fromEntries([...ds.e].map(([k, m]) => [k, [m.s, m.t]]));
      out[ds.gd] = e;
    }
    return out;
  }

  /** Merge saved marks: the higher seq of a series wins. Malformed entries are skipped. */
  restore(saved: Record<string, SeqSnapshotEntry> | undefined): void {
    for (const [gd, entry] of Object.entries(saved ?? {})) {
      const i = gd.indexOf('/');
      if (i < 0 || !entry || typeof entry.o !== 'string') continue;
      const ds = this.series(gd.slice(0, i), entry.o, gd.slice(i + 1));
      for (const [kind, marks] of [['r', ds.r], ['e', ds.e]] as const) {
        for (const [name, v] of Object.entries(entry[kind] ?? {})) {
          if (!Array.isArray(v) || typeof v[0] !== 'number' || typeof v[1] !== 'number') continue;
          const m = marks.get(name);
          if (!m) marks.set(name, { s: v[0], t: v[1] });
          else if (v[0] > m.s) (m.s = v[0]), (m.t = Math.max(m.t, v[1]));
        }
      }
    }
  }

  private series(gatewayId: string, site: string, device: string): DeviceSeries {
    let devices = this.byGateway.get(gatewayId);
    if (!devices) this.byGateway.set(gatewayId, (devices = new Map()));
    let ds = devices.get(device);
    if (!ds) {
      devices.set(device, (ds = { o: site, gd: `${gatewayId}/${device}`, r: new Map(), e: new Map() }));
      this.siteSet(site).add(ds);
    } else if (ds.o !== site) {
      // the gateway moved to another site: its marks move with it
      this.bySite.get(ds.o)?.delete(ds);
      ds.o = site;
      this.siteSet(site).add(ds);
    }
    return ds;
  }

  private siteSet(site: string): Set<DeviceSeries> {
    let s = this.bySite.get(site);
    if (!s) this.bySite.set(site, (s = new Set()));
    return s;
  }
}
