// Storage faults are retried until they succeed or the worker stops (ingest/README.md, "Exactly
// once"): a fault without a SQLSTATE or a connection / shutdown / deadlock one is retryable
// (`SinkError.retryable`, decided by the writer from an explicit list); a refusal of the data is not.
import type { Clock, Logger } from '../../contract/index.ts';
import type { SinkError } from '../postgres/writer.ts';

export interface RetryPolicy {
  minMs: number;
  maxMs: number;
}

export class StorageRetry {
  retries = 0;
  state: 'ok' | 'retrying' = 'ok';
  constructor(
    private readonly clock: Clock,
    private readonly policy: RetryPolicy,
    private readonly log: Logger,
    private readonly stopping: () => boolean,
  ) {}

  sleep(ms: number): Promise<void> {
    return new Promise<void>((r) => this.clock.setTimeout(r, ms));
  }

  /** Runs `fn` until it succeeds; rethrows a non-retryable fault, or any fault once stopping. */
  async run<T>(unit: string, fn: () => Promise<T>): Promise<T> {
    let delay = this.policy.minMs;
    let failed = false;
    for (;;) {
      try {
        const out = await fn();
        if (failed) this.recovered(unit);
        return out;
      } catch (e) {
        const err = e as SinkError;
        if (err.retryable === false || this.stopping()) throw e;
        this.failing(unit, err);
        failed = true;
        await this.sleep(delay);
        delay = Math.min(this.policy.maxMs, delay * 2);
      }
    }
  }

  private failing(unit: string, err: SinkError): void {
    this.retries++;
    if (this.state !== 'retrying') {
      this.log.warn('storage unavailable; holding messages unacknowledged and retrying (数据库不可用，重试中)', { unit, error: err.message, code: err.code });
    }
    this.state = 'retrying';
  }

  private recovered(unit: string): void {
    if (this.state === 'retrying') this.log.info('storage back (数据库已恢复)', { unit });
    this.state = 'ok';
  }
}
