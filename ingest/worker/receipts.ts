// Receipts (docs/delivery.md "Receipts"): after custody passes, name every seq the centre holds on
// the gateway's own `receipt` topic, QoS 1, in inclusive ranges, at most MAX_BATCH ranges each.
import { buildTopic, MAX_BATCH, toSeqRanges, type Clock, type Logger, type Receipt } from '../../contract/index.ts';

/**
 * The receipts naming `seqs` (any order, repeats allowed) for one gateway: inclusive ranges, at most
 * MAX_BATCH ranges to a receipt (receiptSchema), so a commit with scattered seqs gets several.
 */
export function buildReceipts(gatewayId: string, seqs: Iterable<number>, ts: number): Receipt[] {
  const ranges = toSeqRanges(seqs);
  const out: Receipt[] = [];
  for (let i = 0; i < ranges.length; i += MAX_BATCH) out.push({ v: 1, gateway: gatewayId, ts, seqs: ranges.slice(i, i + MAX_BATCH) });
  return out;
}

export interface Publisher {
  publish(topic: string, payload: string, qos: 0 | 1): Promise<void>;
}

export class ReceiptPublisher {
  published = 0;
  failed = 0;
  constructor(
    private readonly clock: Clock,
    private readonly control: () => Publisher | undefined,
    private readonly log: Logger,
  ) {}

  /** Publishes the receipts of `seqs`; a failure is counted and logged, never thrown. */
  async send(gw: { id: string; county: string }, seqs: number[]): Promise<void> {
    if (seqs.length === 0) return;
    const topic = buildTopic({ county: gw.county, gatewayId: gw.id, channel: 'receipt' });
    for (const receipt of buildReceipts(gw.id, seqs, this.clock.now())) {
      try {
        const lane = this.control();
        if (!lane) throw new Error('control connection not open');
        await lane.publish(topic, JSON.stringify(receipt), 1);
        this.published++;
      } catch (e) {
        // The records are held; without a receipt the gateway sends them again and the
        // duplicates get their receipt then.
        this.failed++;
        this.log.warn('receipt not published; the gateway will resend and be receipted then (回执发送失败)', { gateway: gw.id, error: (e as Error).message });
      }
    }
  }
}
