// Drills by source (DESIGN "Alerts"): a drill row names its staged devices; a record is a drill
// when its device is staged by a drill active at its time (or now), or when it says so itself.
// The registry keeps the active drills in memory (refreshed on every tick and on each start) and
// answers from the database inside an alert's transaction, so a drill started by another process
// counts at once.
import { inScope, parseOrgPath, type Clock, type Logger } from '../../contract/index.ts';
import type { Db, Queryable } from '../db.ts';
import { scopeSql, type Scope } from '../scope.ts';
import { AlertError, ts } from './store.ts';

export interface DrillInfo {
  id: number;
  orgPath: string;
  /** the staged devices (`gateway/device`): only what they report is a drill */
  devices: string[];
  startsAt: number;
  endsAt: number;
  startedBy: string;
}

interface ActiveDrill {
  orgPath: string;
  startsAt: number;
  endsAt: number;
  devices: Set<string>;
}

export class DrillRegistry {
  private drills: ActiveDrill[] = [];
  constructor(private readonly db: Db, private readonly clock: Clock, private readonly log: Logger) {}

  async refresh(): Promise<void> {
    const r = await this.db.query<{ org_path: string; starts_at: number; ends_at: number; devices: string[] }>(
      `select org_path, (extract(epoch from starts_at) * 1000)::float8 as starts_at, (extract(epoch from ends_at) * 1000)::float8 as ends_at, devices from drills where ends_at > ${ts(1)}`,
      [this.clock.now()],
    );
    this.drills = r.rows.map((d) => ({ orgPath: d.org_path, startsAt: Number(d.starts_at), endsAt: Number(d.ends_at), devices: new Set(d.devices ?? []) }));
  }

  /** is this device staged by a drill active at `at` or now? */
  staged(gatewayId: string, deviceId: string, at: number, now = this.clock.now()): boolean {
    const k = `${gatewayId}/${deviceId}`;
    return this.drills.some((d) => d.devices.has(k) && ((d.startsAt <= at && at < d.endsAt) || (d.startsAt <= now && now < d.endsAt)));
  }

  stagedDevices(now: number): Set<string> {
    return new Set(this.drills.filter((d) => d.startsAt <= now && now < d.endsAt).flatMap((d) => [...d.devices]));
  }

  /** the same question inside an alert's transaction */
  async stagedInDb(tx: Queryable, gatewayId: string, deviceId: string, at: number, now: number): Promise<boolean> {
    const r = await tx.query(
      `select 1 from drills where $3 = any(devices) and ((starts_at <= ${ts(1)} and ends_at > ${ts(1)}) or (starts_at <= ${ts(2)} and ends_at > ${ts(2)})) limit 1`,
      [at, now, `${gatewayId}/${deviceId}`],
    );
    return r.rowCount > 0;
  }

  async start(scope: Scope, orgPath: string, minutes: number, who: string, devices: readonly string[]): Promise<DrillInfo> {
    try {
      parseOrgPath(orgPath);
    } catch (e) {
      throw new AlertError((e as Error).message, 'invalid');
    }
    if (!inScope(scope.orgPath, orgPath)) throw new AlertError(`${orgPath} is outside your scope ${scope.orgPath} / 超出权限范围`, 'forbidden');
    if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 24 * 60) throw new AlertError('a drill lasts between 1 minute and 24 hours / 演练时长须在 1 分钟到 24 小时之间', 'invalid');
    const stagedList = await this.stagedKeys(orgPath, devices);
    const now = this.clock.now();
    const r = await this.db.query<{ id: number }>(
      `insert into drills (org_path, starts_at, ends_at, started_by, devices) values ($1, ${ts(2)}, to_timestamp(($2::float8 + $3::float8) / 1000), $4, $5::text[]) returning id::float8 as id`,
      [orgPath, now, minutes * 60_000, who, stagedList],
    );
    await this.refresh();
    this.log.info('drill started', { orgPath, minutes, by: who, devices: stagedList });
    return { id: Number(r.rows[0]!.id), orgPath, devices: stagedList, startsAt: now, endsAt: now + minutes * 60_000, startedBy: who };
  }

  async active(scope: Scope): Promise<DrillInfo[]> {
    const params: unknown[] = [this.clock.now()];
    const r = await this.db.query<{ id: number; org_path: string; starts_at: number; ends_at: number; started_by: string; devices: string[] }>(
      `select id::float8 as id, org_path, (extract(epoch from starts_at) * 1000)::float8 as starts_at, (extract(epoch from ends_at) * 1000)::float8 as ends_at, started_by, devices
         from drills where ends_at > ${ts(1)} and ${scopeSql(scope, 'org_path', params)} order by starts_at`,
      params,
    );
    return r.rows.map((d) => ({ id: Number(d.id), orgPath: d.org_path, devices: d.devices ?? [], startsAt: Math.round(Number(d.starts_at)), endsAt: Math.round(Number(d.ends_at)), startedBy: d.started_by }));
  }

  /** A drill's staged devices as `gateway/device`, each one a device of the drill's site. */
  private async stagedKeys(orgPath: string, devices: readonly string[]): Promise<string[]> {
    if (!Array.isArray(devices) || devices.length > 200) throw new AlertError('a drill stages at most 200 devices / 演练设备至多 200 个', 'invalid');
    const out: string[] = [];
    for (const name of devices) {
      if (typeof name !== 'string' || name.length === 0 || name.length > 200) throw new AlertError(`drill device "${String(name)}" is not a device name / 演练设备名无效`, 'invalid');
      const [gw, dev] = name.includes('/') ? [name.slice(0, name.indexOf('/')), name.slice(name.indexOf('/') + 1)] : [null, name];
      const r = await this.db.query<{ gateway_id: string; device_id: string }>(
        `select gateway_id, device_id from devices where device_id = $1 and ($2::text is null or gateway_id = $2) and (org_path = $3 or org_path like $3 || '/%')`,
        [dev, gw, orgPath],
      );
      if (r.rows.length !== 1)
        throw new AlertError(
          `drill device "${name}" is ${r.rows.length ? 'ambiguous: name it gateway/device' : `not a device of ${orgPath}`} / 演练设备${r.rows.length ? '不唯一，请写作 网关/设备' : '不在该单位'}`,
          'invalid',
        );
      out.push(`${r.rows[0]!.gateway_id}/${r.rows[0]!.device_id}`);
    }
    return [...new Set(out)];
  }
}
