// Outstanding-batch bookkeeping of the uplink (docs/delivery.md, "The chain of custody"): which
// published batches still wait for the centre's receipt, which of them are due to be sent again,
// and how many each lane group has open (flow control). A broker's PUBACK plays no part here:
// only a receipt closes a batch. The one timer it owns fires at the earliest resend deadline.
import type { Clock } from '../contract/index.ts';
import type { Lane } from './buffer.ts';

/** Alarms and routine records have separate windows, so alarms never wait behind the backlog. */
export type LaneGroup = 'alarm' | 'routine';
export const groupOf = (lane: Lane): LaneGroup => (lane === 'alarm' ? 'alarm' : 'routine');

export interface OutstandingBatch {
  readonly id: number;
  readonly lane: Lane;
  /** seqs of this batch that no receipt has named yet, ascending */
  seqs: number[];
  /** first publish of any of these records */
  readonly firstSentAt: number;
  /** last (re)publish: the resend deadline counts from here */
  sentAt: number;
  sends: number;
}

/** true when seq lies in one of the ascending, inclusive ranges */
export function inRanges(ranges: ReadonlyArray<readonly [number, number]>, seq: number): boolean {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const [a, b] = ranges[mid]!;
    if (seq < a) hi = mid - 1;
    else if (seq > b) lo = mid + 1;
    else return true;
  }
  return false;
}

export class CustodyTracker {
  private readonly open = new Map<number, OutstandingBatch>();
  private nextId = 1;
  private timer: unknown = null;
  private timerAt = Infinity;
  private stopped = false;

  /** `onDue` runs when a batch passed its deadline; the owner then asks due() and resends */
  constructor(
    private readonly clock: Clock,
    private readonly timeoutMs: number,
    private readonly onDue: () => void,
  ) {}

  /** a batch was published (first time) */
  sent(lane: Lane, seqs: number[]): OutstandingBatch {
    const now = this.clock.now();
    const b: OutstandingBatch = { id: this.nextId++, lane, seqs: [...seqs].sort((x, y) => x - y), firstSentAt: now, sentAt: now, sends: 1 };
    this.open.set(b.id, b);
    this.arm();
    return b;
  }

  /** a due batch was published again with the seqs still buffered; none left closes it */
  resent(id: number, seqsStillHeld: number[]): void {
    const b = this.open.get(id);
    if (!b) return;
    if (seqsStillHeld.length === 0) {
      this.open.delete(id);
      return;
    }
    b.seqs = [...seqsStillHeld].sort((x, y) => x - y);
    b.sentAt = this.clock.now();
    b.sends++;
    this.arm();
  }

  /** A receipt named these ranges: returns how many outstanding seqs it covered; emptied batches close. */
  confirm(ranges: ReadonlyArray<readonly [number, number]>): number {
    let n = 0;
    for (const [id, b] of this.open) {
      const left = b.seqs.filter((s) => !inRanges(ranges, s));
      n += b.seqs.length - left.length;
      if (left.length === 0) this.open.delete(id);
      else b.seqs = left;
    }
    return n;
  }

  /** batches awaiting a receipt in a lane group (the window is uplink.inflight) */
  count(group: LaneGroup): number {
    let n = 0;
    for (const b of this.open.values()) if (groupOf(b.lane) === group) n++;
    return n;
  }

  /**
   * When a batch is sent again: alarms after half the timeout, the rest after the whole of it. Alarms
   * are few and urgent, and a backlog sent at the same moment (a reconnect) must never be resent,
   * and so stored, before the alarms among it.
   */
  deadline(b: OutstandingBatch): number {
    return b.sentAt + (b.lane === 'alarm' ? Math.floor(this.timeoutMs / 2) : this.timeoutMs);
  }

  /** batches past their deadline, alarms first, then oldest first */
  due(): OutstandingBatch[] {
    const now = this.clock.now();
    return [...this.open.values()].filter((b) => this.deadline(b) <= now).sort(byUrgency);
  }

  /** every alarm batch without a receipt (sent again first on a reconnect) */
  alarms(): OutstandingBatch[] {
    return [...this.open.values()].filter((b) => b.lane === 'alarm').sort(byUrgency);
  }

  /** when the oldest batch still without a receipt was first sent, or null */
  oldestFirstSentAt(): number | null {
    let t: number | null = null;
    for (const b of this.open.values()) if (t === null || b.firstSentAt < t) t = b.firstSentAt;
    return t;
  }

  size(): number {
    return this.open.size;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  /** One timer at the earliest future deadline; deadlines already passed wait for due() (e.g. on reconnect). */
  private arm(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    let at = Infinity;
    for (const b of this.open.values()) {
      const d = this.deadline(b);
      if (d > now && d < at) at = d;
    }
    if (at === this.timerAt && this.timer) return;
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = at;
    if (at === Infinity) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      try {
        this.onDue();
      } finally {
        this.arm();
      }
    }, at - now);
  }
}

function byUrgency(a: OutstandingBatch, b: OutstandingBatch): number {
  const pa = a.lane === 'alarm' ? 0 : 1;
  const pb = b.lane === 'alarm' ? 0 : 1;
  return pa - pb || a.sentAt - b.sentAt || a.id - b.id;
}
