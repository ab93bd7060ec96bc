// Gateway status (retained birth / last will): applied to the store, then passed to listeners.
import { type Clock, type GatewayStatus, type Logger } from '../../contract/index.ts';
import type { InboundMessage } from '../mqtt-lane.ts';
import type { BatchListener } from '../types.ts';
import type { StorageRetry } from './storage-retry.ts';

export class StatusApplier {
  constructor(
    private readonly apply: (s: GatewayStatus) => Promise<{ orgPath: string; county: string } | null>,
    private readonly listeners: readonly BatchListener[],
    private readonly retry: StorageRetry,
    private readonly clock: Clock,
    private readonly errors: Record<string, number>,
    private readonly log: Logger,
  ) {}

  async handle(m: InboundMessage, status: GatewayStatus): Promise<void> {
    // A last will carries the time its gateway connected; what counts is when it fired.
    const effective = status.state === 'offline' ? { ...status, ts: Math.max(status.ts, this.clock.now()) } : status;
    let applied: { orgPath: string; county: string } | null;
    try {
      applied = await this.retry.run('status', () => this.apply(effective));
    } catch (e) {
      this.log.error('could not apply gateway status; left unacknowledged', { gateway: status.gateway, error: (e as Error).message });
      return;
    }
    m.settle();
    if (!applied) return;
    this.log.info('gateway status', { gateway: status.gateway, state: status.state, devices: status.devices?.length });
    for (const l of this.listeners) {
      if (!l.onGatewayStatus) continue;
      try {
        await l.onGatewayStatus({ ...effective, orgPath: applied.orgPath });
      } catch (e) {
        this.errors[l.name] = (this.errors[l.name] ?? 0) + 1;
        this.log.child(l.name).error('listener failed on a gateway status', { error: e as Error, gateway: status.gateway });
      }
    }
  }
}
