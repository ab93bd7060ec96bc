// Rollups of closed minutes (native PostgreSQL / PGlite): refreshed on their own timer, off the
// ingest path, their own fault unit. One refresh at a time; a failure keeps the marks for the next.
import type { Clock, Logger } from '../../contract/index.ts';
import type { SinkError } from '../postgres/writer.ts';

export class RollupTimer {
  private timer: unknown = null;
  private running = false;
  constructor(
    private readonly clock: Clock,
    private readonly everyMs: number,
    private readonly refresh: () => Promise<void>,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.everyMs <= 0 || this.timer !== null) return;
    this.timer = this.clock.setInterval(() => void this.runOnce(), this.everyMs);
  }

  stop(): void {
    if (this.timer !== null) this.clock.clearInterval(this.timer);
    this.timer = null;
  }

  async runOnce(): Promise<void> {
    if (this.running || this.timer === null) return;
    this.running = true;
    try {
      await this.refresh();
    } catch (e) {
      this.log.warn('rollup refresh failed; the marks stay and are retried', { error: (e as Error).message, code: (e as SinkError).code });
    } finally {
      this.running = false;
    }
  }
}
