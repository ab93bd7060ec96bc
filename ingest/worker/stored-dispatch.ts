// Listeners without `onArrival` (InfluxDB, probes) get the records new to the database after the
// storage commit: events first, readings after, one batch at a time, each listener its own fault
// unit. A reading backlog past `maxBacklog` holds the readings writer (`caughtUp`).
import type { Logger } from '../../contract/index.ts';
import type { BatchListener, StoredBatch } from '../types.ts';

export class StoredDispatch {
  private events: StoredBatch[] = [];
  private readings: StoredBatch[] = [];
  private running = false;
  private waiters: Array<() => void> = [];
  constructor(
    /** read at each call: the CLI adds listeners after the worker is created */
    private readonly listeners: readonly BatchListener[],
    private readonly errors: Record<string, number>,
    private readonly log: Logger,
    private readonly maxBacklog = 64,
  ) {}

  private get targets(): BatchListener[] {
    return this.listeners.filter((l) => !l.onArrival);
  }

  enqueue(kind: 'events' | 'readings', b: StoredBatch): void {
    if (this.targets.length === 0) return;
    this[kind].push(b);
    if (!this.running) void this.drain();
  }

  caughtUp(): Promise<void> {
    return this.readings.length < this.maxBacklog ? Promise.resolve() : new Promise<void>((r) => this.waiters.push(r));
  }

  private async drain(): Promise<void> {
    this.running = true;
    for (;;) {
      const next = this.events.shift() ?? this.readings.shift();
      if (!next) break;
      await this.call(next);
      if (this.readings.length < this.maxBacklog) this.wake();
    }
    this.running = false;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private async call(batch: StoredBatch): Promise<void> {
    for (const l of this.targets) {
      try {
        await l.onStored(batch);
      } catch (e) {
        this.errors[l.name] = (this.errors[l.name] ?? 0) + 1;
        this.log.child(l.name).error('listener failed on a stored batch; the batch stays stored', { error: e as Error, gateway: batch.gateway.id });
      }
    }
  }
}
