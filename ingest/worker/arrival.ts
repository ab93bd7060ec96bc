// Rules see readings on arrival (ingest/README.md "Rules on arrival"): a valid batch of a
// registered gateway goes to every listener with `onArrival` at once, before and independently of
// the bulk storage commit. Each listener is its own fault unit.
import type { DeviceEvent, Logger, Reading } from '../../contract/index.ts';
import type { ArrivedBatch, BatchListener, GatewayInfo } from '../types.ts';

export class ArrivalEvaluation {
  constructor(
    private readonly listeners: readonly BatchListener[],
    private readonly errors: Record<string, number>,
    private readonly log: Logger,
  ) {}

  /** Resolves true when every arrival listener committed what it made of the records, false if one failed. */
  async evaluate(gw: GatewayInfo, kind: 'readings' | 'events', records: readonly (Reading | DeviceEvent)[]): Promise<boolean> {
    const batch: ArrivedBatch = {
      gateway: { id: gw.id, orgPath: gw.orgPath, county: gw.county },
      readings: kind === 'readings' ? (records as Reading[]) : [],
      events: kind === 'events' ? (records as DeviceEvent[]) : [],
    };
    let ok = true;
    await Promise.all(this.listeners.filter((l) => l.onArrival).map(async (l) => {
      try {
        await l.onArrival!(batch);
      } catch (e) {
        ok = false;
        this.errors[l.name] = (this.errors[l.name] ?? 0) + 1;
        this.log.child(l.name).error('listener failed on an arrived batch (规则评估失败)', { error: e as Error, gateway: gw.id });
      }
    }));
    return ok;
  }
}
