// The rule evaluator: records of an arrived batch (events alarms first) and the clock's ticks go to
// the rule engine; what it says comes back as transitions for the writer. Records carry their
// (gateway, seq): the engine skips a record whose seq it has already evaluated for its series, so a
// redelivered batch evaluates to nothing (the engine's contract, rules/engine.ts).
import type { Clock, DeviceEvent, Logger } from '../../contract/index.ts';
import type { AlertTransition, EngineResult, RuleEngine } from '../../rules/index.ts';
import type { ArrivedBatch } from '../types.ts';
import type { DeviceDirectory } from './devices.ts';
import type { DrillRegistry } from './drills.ts';
import type { RuleStateStore } from './rule-state.ts';

// alarms first; within a priority in seq order, the order the engine's per-series seq guard admits
const alarmsFirst = (a: DeviceEvent, b: DeviceEvent) => (a.priority === b.priority ? a.seq - b.seq : a.priority === 'alarm' ? -1 : 1);

export class RuleEvaluator {
  evaluated = 0;
  faults = 0;
  private lastAbsence = -Infinity;
  constructor(
    private readonly engine: RuleEngine,
    private readonly devices: DeviceDirectory,
    private readonly drills: DrillRegistry,
    private readonly state: RuleStateStore,
    private readonly clock: Clock,
    private readonly log: Logger,
    /** silence while the platform itself was down is not the devices' fault */
    private readonly startedAt: number,
    private readonly absenceEveryMs = 5000,
  ) {}

  async batch(batch: ArrivedBatch, what: 'events' | 'readings'): Promise<AlertTransition[]> {
    const site = batch.gateway.orgPath;
    const gw = batch.gateway.id;
    const recs = what === 'events' ? batch.events : batch.readings;
    const devs = await this.devices.of(gw, recs.map((r) => r.device));
    const now = this.clock.now();
    const ctx = (device: string, at: number) => ({ gatewayId: gw, orgPath: site, device: devs.get(device), drill: this.drills.staged(gw, device, at, now) });
    const out: AlertTransition[] = [];
    if (what === 'events') {
      for (const e of [...batch.events].sort(alarmsFirst)) this.note(this.engine.onEvent(e, ctx(e.device, e.ts)), out);
    } else {
      for (const r of batch.readings) this.note(this.engine.onReading(r, ctx(r.device, r.ts)), out);
    }
    this.evaluated += recs.length;
    this.state.noteEngine();
    return out;
  }

  /** durations on every call; silences every `absenceEveryMs` (the device list is a query) or when forced */
  async tick(force = false): Promise<AlertTransition[]> {
    const now = this.clock.now();
    const due = force || now - this.lastAbsence >= this.absenceEveryMs;
    if (due) this.lastAbsence = now;
    const devices = due ? await this.devices.all(this.startedAt) : [];
    const out: AlertTransition[] = [];
    this.note(this.engine.onTick(now, devices, this.drills.stagedDevices(now)), out);
    this.state.noteEngine();
    return out;
  }

  private note(res: EngineResult, into: AlertTransition[]): void {
    for (const f of res.faults) {
      this.faults++;
      this.log.child(`rule/${f.ruleId}`).error('rule evaluation failed', { error: f.message });
    }
    into.push(...res.transitions);
  }
}
