// The alerting's serial work with two lanes: emergencies never wait behind bulk readings.
// Batches are evaluated one after another (the engine is synchronous and fast); the transitions of
// the batches taken together are committed in one small transaction (alerts, history, outbox, rule
// state), so a backlog drains in a few commits instead of one per batch. Other work (ticks,
// acknowledgements) runs in order between them. A batch's promise resolves once its transitions
// are committed — possibly by a later retry — which is what the ingest receipt waits for.
import type { AlertTransition } from '../../rules/index.ts';
import type { ArrivedBatch } from '../types.ts';

export type WorkLane = 'urgent' | 'bulk';

type Item =
  | { kind: 'batch'; batch: ArrivedBatch; what: 'events' | 'readings'; resolve: () => void; reject: (e: unknown) => void }
  | { kind: 'task'; fn: () => Promise<void>; resolve: () => void; reject: (e: unknown) => void };

export interface WorkQueueDeps {
  evaluate(batch: ArrivedBatch, what: 'events' | 'readings'): Promise<AlertTransition[]>;
  /** commits `transitions`; calls `committed` once they are (now or on a later retry); never throws */
  apply(transitions: AlertTransition[], committed: () => void): Promise<void>;
}

export class WorkQueue {
  private urgent: Item[] = [];
  private bulk: Item[] = [];
  private pumping: Promise<void> | null = null;
  constructor(private readonly d: WorkQueueDeps, private readonly maxTake = 500) {}

  get size(): number {
    return this.urgent.length + this.bulk.length;
  }

  /** resolves when the pump is idle */
  async idle(): Promise<void> {
    while (this.pumping) await this.pumping;
  }

  task(lane: WorkLane, fn: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => this.push(lane, { kind: 'task', fn, resolve, reject }));
  }

  batch(lane: WorkLane, batch: ArrivedBatch, what: 'events' | 'readings'): Promise<void> {
    return new Promise<void>((resolve, reject) => this.push(lane, { kind: 'batch', batch, what, resolve, reject }));
  }

  private push(lane: WorkLane, it: Item): void {
    (lane === 'urgent' ? this.urgent : this.bulk).push(it);
    void this.pump();
  }

  private pump(): Promise<void> {
    this.pumping ??= (async () => {
      try {
        for (;;) {
          const lane: WorkLane = this.urgent.length ? 'urgent' : 'bulk';
          const items = (lane === 'urgent' ? this.urgent : this.bulk).splice(0, this.maxTake);
          if (items.length === 0) break;
          await this.run(items, lane);
        }
      } finally {
        this.pumping = null;
      }
    })();
    return this.pumping;
  }

  private async run(items: Item[], lane: WorkLane): Promise<void> {
    let out: AlertTransition[] = [];
    let waiting: Item[] = [];
    const flush = async () => {
      if (waiting.length === 0) return;
      const done = waiting;
      const ts = out;
      waiting = [];
      out = [];
      await this.d.apply(ts, () => done.forEach((w) => w.resolve()));
    };
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (lane === 'bulk' && this.urgent.length > 0) {
        // an emergency arrived: store what is evaluated, put the rest back, let it go first
        this.bulk.unshift(...items.slice(i));
        break;
      }
      if (it.kind === 'batch') {
        try {
          out.push(...(await this.d.evaluate(it.batch, it.what)));
          waiting.push(it);
        } catch (e) {
          it.reject(e);
        }
        continue;
      }
      await flush();
      await it.fn().then(it.resolve, it.reject);
    }
    await flush();
  }
}
