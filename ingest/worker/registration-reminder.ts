import type { Clock } from '../../contract/index.ts';

/**
 * Says at most once a minute per gateway that a gateway is not registered centrally: its records
 * wait on the gateway, so the log names what to do, not every message.
 */
export class RegistrationReminder {
  private last = new Map<string, number>();
  constructor(private clock: Clock, private everyMs: number, private say: (gatewayId: string, county: string) => void) {}
  note(gatewayId: string, county: string): void {
    const now = this.clock.now();
    const at = this.last.get(gatewayId);
    if (at !== undefined && now - at < this.everyMs) return;
    this.last.set(gatewayId, now);
    this.say(gatewayId, county);
  }
}
