// Custody passes on the receipt (docs/delivery.md). With rules on arrival a message is in the
// centre's custody only when BOTH hold:
//   1. its records are committed to `readings` / `events` (or kept as dead letters), and
//   2. the rule evaluation of those records has committed its alerts, outbox rows and rule state.
// Only then is the message settled (PUBACK to the broker) and its seqs receipted to the gateway.
// A crash before that leaves the message unacknowledged: the broker redelivers it (persistent
// session) and the gateway resends it (no receipt); storage dedups on (gateway, seq) and the rule
// engine skips seqs it has already evaluated, so nothing is lost and nothing doubles.
import type { Logger } from '../../contract/index.ts';
import type { InboundMessage } from '../mqtt-lane.ts';
import type { GatewayInfo } from '../types.ts';
import { crashPoint } from './crash-points.ts';
import type { ReceiptPublisher } from './receipts.ts';

/** One uplink message between its arrival and its receipt. */
export interface PendingMessage<R extends { seq: number } = { seq: number }> {
  gateway: GatewayInfo;
  records: R[];
  floor?: number;
  sentAt: number;
  msg: InboundMessage;
  count: number;
  /** seqs of this message's records dead-lettered alone: in custody, receipted with the message */
  held: number[];
  /** rule evaluation of `records` on arrival: true once committed, false if it failed */
  evaluated: Promise<boolean>;
}

export class CustodyGate {
  private inFlight = new Set<Promise<void>>();
  constructor(
    private readonly receipts: ReceiptPublisher,
    private readonly stopping: () => boolean,
    private readonly log: Logger,
  ) {}

  /** Called once `items` are stored (step 1): settles and receipts them once step 2 holds too. */
  stored(items: readonly PendingMessage[]): void {
    const run = this.release(items).catch((e) => this.log.error('receipt step failed; the gateway will resend', { error: e as Error }));
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
  }

  /** Resolves when every release started so far is done. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  private async release(items: readonly PendingMessage[]): Promise<void> {
    const evaluated = await Promise.all(items.map((p) => p.evaluated));
    const byGateway = new Map<string, { gw: GatewayInfo; seqs: number[] }>();
    crashPoint('before-receipt');
    items.forEach((p, i) => {
      // An evaluation that failed while the worker stops: left unacknowledged, redelivered to the
      // next worker. One that failed otherwise was logged and counted; the records are stored.
      if (!evaluated[i] && this.stopping()) return;
      p.msg.settle();
      let g = byGateway.get(p.gateway.id);
      if (!g) byGateway.set(p.gateway.id, (g = { gw: p.gateway, seqs: [] }));
      for (const r of p.records) g.seqs.push(r.seq);
      g.seqs.push(...p.held);
    });
    await Promise.all([...byGateway.values()].map((g) => this.receipts.send(g.gw, g.seqs)));
  }
}
