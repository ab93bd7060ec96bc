// Devices as the rules see them (DeviceInfo): per gateway for evaluation (cached 30 s, 5 s when a
// record names a device not in the cache), all of the region for the silence check.
import type { Clock } from '../../contract/index.ts';
import type { DeviceInfo } from '../../rules/index.ts';
import type { Db } from '../db.ts';

interface DeviceRowOut {
  gateway_id?: string;
  device_id: string;
  org_path: string;
  profile: string;
  building: string | null;
  room: string | null;
  expected_interval_ms: number | null;
  state: string;
  last_seen: number | null;
}

const toInfo = (gatewayId: string, d: DeviceRowOut): DeviceInfo => ({
  gatewayId, deviceId: d.device_id, orgPath: d.org_path, profile: d.profile, building: d.building, room: d.room,
  expectedIntervalMs: d.expected_interval_ms, state: d.state, lastSeen: d.last_seen === null ? null : Number(d.last_seen),
});

export class DeviceDirectory {
  private cache = new Map<string, { at: number; devices: Map<string, DeviceInfo> }>();
  constructor(private readonly db: Db, private readonly clock: Clock, private readonly region?: string) {}

  /** device list or states changed: look again now rather than at the next cache expiry */
  forget(gatewayId: string): void {
    this.cache.delete(gatewayId);
  }

  async of(gatewayId: string, need: Iterable<string>): Promise<Map<string, DeviceInfo>> {
    const c = this.cache.get(gatewayId);
    const now = this.clock.now();
    const missing = c ? [...need].some((d) => !c.devices.has(d)) : true;
    if (c && now - c.at < 30_000 && (!missing || now - c.at < 5_000)) return c.devices;
    const r = await this.db.query<DeviceRowOut>(
      `select device_id, org_path, profile, building, room, expected_interval_ms, state, (extract(epoch from last_seen) * 1000)::float8 as last_seen from devices where gateway_id = $1`,
      [gatewayId],
    );
    const m = new Map(r.rows.map((d) => [d.device_id, toInfo(gatewayId, d)]));
    this.cache.set(gatewayId, { at: now, devices: m });
    return m;
  }

  /** every device of the region, a device of an offline gateway offline; silence counts from `watchedSince` */
  async all(watchedSince: number): Promise<DeviceInfo[]> {
    const params: unknown[] = [];
    let where = '';
    if (this.region) {
      params.push(this.region);
      where = `where d.org_path = $1 or d.org_path like $1 || '/%'`;
    }
    const r = await this.db.query<DeviceRowOut & { gateway_id: string }>(
      `select d.gateway_id, d.device_id, d.org_path, d.profile, d.building, d.room, d.expected_interval_ms,
              case when g.state = 'offline' then 'offline' else d.state end as state,
              (extract(epoch from d.last_seen) * 1000)::float8 as last_seen
         from devices d join gateways g on g.id = d.gateway_id ${where}`,
      params,
    );
    return r.rows.map((d) => ({ ...toInfo(d.gateway_id, d), watchedSince }));
  }
}
