// Dead letters: what cannot be stored (or breaks the contract) is kept with its reason, counted once
// it is kept, so a count seen means a row to read (ingest/README.md).
import type { Logger } from '../../contract/index.ts';
import type { DeadLetterInput } from '../store.ts';
import type { DeadLetterReason } from '../types.ts';
import type { StorageRetry } from './storage-retry.ts';

export class DeadLetterKeeper {
  total = 0;
  byReason: Record<string, number> = {};
  constructor(
    private readonly record: (d: DeadLetterInput) => Promise<unknown>,
    private readonly retry: StorageRetry,
    private readonly log: Logger,
  ) {}

  /** Keeps one dead letter (retrying storage faults); false when the worker stops first. */
  async keep(topic: string, reason: DeadLetterReason, detail: string, payload: Buffer | string, gatewayId: string | null, orgPath: string | null, unit: 'message' | 'record' = 'message'): Promise<boolean> {
    this.log.warn('dead-lettered (转入死信表)', { reason, topic, detail: detail.slice(0, 300) });
    try {
      await this.retry.run('dead-letters', () => this.record({ topic, gatewayId, orgPath, reason, detail, payload, unit }));
      this.total++;
      this.byReason[reason] = (this.byReason[reason] ?? 0) + 1;
      return true;
    } catch (e) {
      this.log.error('could not record dead letter; message left unacknowledged', { error: (e as Error).message });
      return false;
    }
  }
}
