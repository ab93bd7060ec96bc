// Time-based work of the alerting, one step after another, each its own fault unit: drills,
// retry of transitions not yet committed, durations and silences, escalation, rule state saves,
// delivery. Runs every `tickMs` on the injected clock, or when called (tests step it by hand).
import type { Clock, Logger } from '../../contract/index.ts';

export interface TickStep {
  name: string;
  /** false = skip this time */
  due?: () => boolean;
  run(): Promise<void>;
}

export class Ticker {
  private running: Promise<void> | null = null;
  private timer: unknown = null;
  constructor(private readonly steps: readonly TickStep[], private readonly clock: Clock, private readonly log: Logger) {}

  start(everyMs: number): void {
    if (everyMs > 0 && this.timer === null) this.timer = this.clock.setInterval(() => void this.tick().catch(() => {}), everyMs);
  }

  async stop(): Promise<void> {
    if (this.timer !== null) this.clock.clearInterval(this.timer);
    this.timer = null;
    if (this.running) await this.running.catch(() => {});
  }

  tick(): Promise<void> {
    this.running ??= (async () => {
      try {
        for (const s of this.steps) {
          if (s.due && !s.due()) continue;
          try {
            await s.run();
          } catch (e) {
            this.log.child(s.name).error('tick step failed', { error: e });
          }
        }
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }
}
