// Gateways known centrally, cached: a registered one for `knownMs`, an unknown one for `unknownMs`
// (short, so `xiaoan gateway add` takes effect within seconds).
import type { Clock } from '../../contract/index.ts';
import type { GatewayInfo } from '../types.ts';

export interface GatewayLookup {
  getGateway(id: string): Promise<GatewayInfo | null>;
}

export class GatewayDirectory {
  private cache = new Map<string, { info: GatewayInfo | null; at: number }>();
  constructor(
    private readonly lookup: GatewayLookup,
    private readonly clock: Clock,
    private readonly knownMs = 60_000,
    private readonly unknownMs = 5_000,
  ) {}

  async get(id: string): Promise<GatewayInfo | null> {
    const c = this.cache.get(id);
    const now = this.clock.now();
    if (c && now - c.at < (c.info ? this.knownMs : this.unknownMs)) return c.info;
    const info = await this.lookup.getGateway(id);
    this.cache.set(id, { info, at: now });
    return info;
  }
}
