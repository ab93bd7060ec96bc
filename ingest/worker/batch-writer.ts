// One lane's bulk writer (readings, or events): messages queue, and whatever arrives while a commit
// runs goes into the next one (group commit, at most `maxRecords`). Storage faults are retried; a
// batch the database refuses for its data is split and stored message by message, so one poison
// message is dead-lettered (`storage`) and the rest is kept. After a commit the messages go to the
// custody gate (receipt once their rules committed too) and the new records to the stored dispatch.
import type { Clock, DeviceEvent, Logger, Reading } from '../../contract/index.ts';
import { recordKey, type NewKeys, type SinkError } from '../postgres/writer.ts';
import type { StoredBatch } from '../types.ts';
import { crashPoint } from './crash-points.ts';
import type { CustodyGate, PendingMessage } from './custody.ts';
import type { DeadLetterKeeper } from './dead-letters.ts';
import type { StorageRetry } from './storage-retry.ts';

export type Lane = 'readings' | 'events';
type Rec = Reading | DeviceEvent;

/** What the writer counts; shared by the lanes of one worker (IngestStats). */
export interface WriterStats {
  stored: Record<Lane, number>;
  duplicates: Record<Lane, number>;
  commits: Record<Lane, number>;
  pending: Record<Lane, number>;
  lastCommit: { records: number; ms: number } | null;
  lagMs: number | null;
}

export interface WriterDeps {
  lane: Lane;
  clock: Clock;
  log: Logger;
  maxRecords: number;
  write(items: readonly PendingMessage<Rec>[]): Promise<NewKeys>;
  retry: StorageRetry;
  deadLetters: DeadLetterKeeper;
  custody: CustodyGate;
  stats: WriterStats;
  /** the records new to the database, by gateway */
  onFresh(lane: Lane, batch: StoredBatch): void;
  /** before each commit of readings: wait while the stored dispatch is behind */
  caughtUp(): Promise<void>;
  /** after each commit: resume reading connections held by backpressure */
  resume(): void;
  stopping(): boolean;
}

export class BatchWriter {
  private queue: PendingMessage<Rec>[] = [];
  private flushing = false;
  private idle: Array<() => void> = [];
  constructor(private readonly d: WriterDeps) {}

  push(p: PendingMessage<Rec>): void {
    this.queue.push(p);
    this.d.stats.pending[this.d.lane] += p.count;
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => void this.loop());
  }

  drained(): Promise<void> {
    return !this.flushing && this.queue.length === 0 ? Promise.resolve() : new Promise((r) => this.idle.push(r));
  }

  private async loop(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.d.stopping()) {
        if (this.d.lane === 'readings') await this.d.caughtUp();
        const take = this.take();
        try {
          await this.commit(take);
        } catch (e) {
          this.d.log.error('commit abandoned (worker stopping); messages stay unacknowledged', { error: (e as Error).message });
        }
      }
    } finally {
      this.flushing = false;
      const w = this.idle;
      this.idle = [];
      for (const f of w) f();
    }
  }

  private take(): PendingMessage<Rec>[] {
    const take: PendingMessage<Rec>[] = [];
    let n = 0;
    while (this.queue.length > 0 && (take.length === 0 || n + this.queue[0]!.count <= this.d.maxRecords)) {
      const p = this.queue.shift()!;
      take.push(p);
      n += p.count;
    }
    return take;
  }

  private async commit(items: PendingMessage<Rec>[]): Promise<void> {
    const started = this.d.clock.now();
    let keys: NewKeys;
    try {
      keys = await this.d.retry.run(this.d.lane, () => this.d.write(items));
    } catch (e) {
      if (this.d.stopping()) throw e;
      return this.refused(items, e as SinkError);
    }
    crashPoint('after-storage-commit');
    this.count(items, keys.size, started);
    this.d.custody.stored(items);
    this.d.resume();
    for (const b of freshByGateway(this.d.lane, items, keys)) this.d.onFresh(this.d.lane, b);
  }

  /** The data itself was refused (not a connection fault): message by message, a lone one dead-lettered. */
  private async refused(items: PendingMessage<Rec>[], e: SinkError): Promise<void> {
    this.d.log.warn('batch refused by the database; storing message by message', { error: e.message, code: e.code });
    if (items.length > 1) {
      for (const p of items) await this.commit([p]);
      return;
    }
    const p = items[0]!;
    this.d.stats.pending[this.d.lane] -= p.count;
    const detail = `database refused the batch: ${e.message} (SQLSTATE ${e.code ?? '?'})`;
    // kept whole as a dead letter (replayable): in custody, so receipted
    if (await this.d.deadLetters.keep(p.msg.topic, 'storage', detail, p.msg.payload, p.gateway.id, p.gateway.orgPath)) this.d.custody.stored([p]);
  }

  private count(items: PendingMessage<Rec>[], fresh: number, started: number): void {
    const s = this.d.stats;
    const lane = this.d.lane;
    const total = items.reduce((n, p) => n + p.count, 0);
    const now = this.d.clock.now();
    s.commits[lane]++;
    s.lastCommit = { records: total, ms: now - started };
    s.stored[lane] += fresh;
    s.duplicates[lane] += total - fresh;
    s.lagMs = now - Math.min(...items.map((p) => p.sentAt));
    s.pending[lane] -= total;
  }
}

/** The records of `items` new to the database (`keys`), grouped by gateway; alarms first among events. */
export function freshByGateway(lane: Lane, items: readonly PendingMessage<Rec>[], keys: NewKeys): StoredBatch[] {
  const byGateway = new Map<string, StoredBatch>();
  for (const p of items) {
    // delete as we go: a record sent twice within one commit is new only once
    const fresh = p.records.filter((r) => keys.delete(recordKey(p.gateway.id, r.seq)));
    if (fresh.length === 0) continue;
    let b = byGateway.get(p.gateway.id);
    if (!b) byGateway.set(p.gateway.id, (b = { gateway: { id: p.gateway.id, orgPath: p.gateway.orgPath, county: p.gateway.county }, readings: [], events: [] }));
    if (lane === 'readings') b.readings.push(...(fresh as Reading[]));
    else b.events.push(...(fresh as DeviceEvent[]));
  }
  const out = [...byGateway.values()];
  for (const b of out) b.events.sort((x, y) => (x.priority === y.priority ? 0 : x.priority === 'alarm' ? -1 : 1));
  return out;
}
