// Scoped queries for dashboards and rules. Every one takes a Scope first and filters through
// scopeSql() (ingest/scope.ts); nothing outside the scope's subtree is ever returned.
// Times go in and out as epoch milliseconds.

import type { DeviceCapabilities } from '../contract/index.ts';
import type { Db } from './db.ts';
import { scopeSql, type Scope } from './scope.ts';

export interface DeviceRow {
  gatewayId: string;
  deviceId: string;
  orgPath: string;
  profile: string;
  name: string;
  building: string | null;
  room: string | null;
  location: string | null;
  state: 'unknown' | 'online' | 'degraded' | 'offline';
  lastSeen: number | null;
  expectedIntervalMs: number | null;
  gatewayState: 'unknown' | 'online' | 'offline';
  /** what the device can do, from its birth (null: its gateway sent none) */
  capabilities: DeviceCapabilities | null;
}

/** jsonb comes back parsed from node-postgres and PGlite alike; text only from older drivers. */
function parseCapabilities(v: unknown): DeviceCapabilities | null {
  if (v == null) return null;
  return (typeof v === 'string' ? JSON.parse(v) : v) as DeviceCapabilities;
}

export interface DeviceFilter {
  gatewayId?: string;
  deviceId?: string;
  state?: DeviceRow['state'];
  profile?: string;
  limit?: number;
}

export type Resolution = 'raw' | '1m' | '1h';

export interface ReadingsQuery {
  device: string;
  metric: string;
  gatewayId?: string;
  from: number;
  to: number;
  /** 'auto' (default): raw up to 6 hours, 1-minute rollup up to 7 days, 1-hour beyond */
  resolution?: Resolution | 'auto';
  limit?: number;
}

export interface ReadingPoint {
  ts: number;
  /** the value (raw) or the mean of the bucket (rollup) */
  value: number;
  min: number;
  max: number;
  count: number;
  gatewayId: string;
}

export interface ReadingsResult {
  resolution: Resolution;
  points: ReadingPoint[];
}

export interface LatestRow {
  gatewayId: string;
  deviceId: string;
  orgPath: string;
  metric: string;
  ts: number;
  value: number;
  quality: string;
}

export interface RegionCount {
  orgPath: string;
  nameZh: string | null;
  nameEn: string | null;
  gateways: number;
  gatewaysOnline: number;
  devices: number;
  devicesOnline: number;
  devicesOffline: number;
}

export interface CategoryCount {
  kind: 'device_profile' | 'event_type';
  key: string;
  count: number;
}

export interface GatewayRow {
  id: string;
  orgPath: string;
  county: string;
  name: string;
  state: 'unknown' | 'online' | 'offline';
  lastSeen: number | null;
  version: string | null;
  bufferDepth: number | null;
  bufferDropped: number | null;
  devices: number;
}

export interface DeadLetterRow {
  id: number;
  receivedAt: number;
  topic: string;
  gatewayId: string | null;
  orgPath: string | null;
  reason: string;
  detail: string;
  payload: string;
  payloadBytes: number;
  /** 'message': the payload is a whole MQTT message; 'record': one record set aside from a valid batch */
  unit: 'message' | 'record';
  replayedAt: number | null;
  replayResult: string | null;
}

export interface DeadLetterFilter {
  limit?: number;
  /** epoch ms */
  since?: number;
  reason?: string;
  gatewayId?: string;
  ids?: number[];
  /** true: only rows never replayed; false: only replayed ones */
  unreplayed?: boolean;
}

export interface EventRow {
  gatewayId: string;
  seq: number;
  deviceId: string;
  orgPath: string;
  type: string;
  ts: number;
  priority: 'alarm' | 'normal';
  drill: boolean;
  data: Record<string, unknown>;
}

export interface Queries {
  listDevices(scope: Scope, filter?: DeviceFilter): Promise<DeviceRow[]>;
  readings(scope: Scope, q: ReadingsQuery): Promise<ReadingsResult>;
  latest(scope: Scope, q?: { device?: string; gatewayId?: string; metric?: string; limit?: number }): Promise<LatestRow[]>;
  countsByRegion(scope: Scope, q?: { depth?: 1 }): Promise<RegionCount[]>;
  countsByCategory(scope: Scope, q?: { from?: number; to?: number }): Promise<CategoryCount[]>;
  listGateways(scope: Scope): Promise<GatewayRow[]>;
  deadLetters(scope: Scope, q?: DeadLetterFilter): Promise<DeadLetterRow[]>;
  events(scope: Scope, q?: { device?: string; gatewayId?: string; type?: string; from?: number; to?: number; limit?: number }): Promise<EventRow[]>;
}

const HOUR = 3_600_000;
export const RAW_MAX_SPAN = 6 * HOUR;
export const MINUTE_ROLLUP_MAX_SPAN = 7 * 24 * HOUR;

/** Which table serves a time range of this length. */
export function resolutionFor(spanMs: number): Resolution {
  if (spanMs <= RAW_MAX_SPAN) return 'raw';
  if (spanMs <= MINUTE_ROLLUP_MAX_SPAN) return '1m';
  return '1h';
}

const ms = (col: string) => `(extract(epoch from ${col}) * 1000)::float8`;
const clampLimit = (n: number | undefined, dflt: number, max: number) =>
  Math.max(1, Math.min(max, Math.floor(Number.isFinite(n) ? (n as number) : dflt)));

export function createQueries(db: Db): Queries {
  return {
    async listDevices(scope, f = {}) {
      const params: unknown[] = [];
      const where = [scopeSql(scope, 'd.org_path', params)];
      if (f.gatewayId) { params.push(f.gatewayId); where.push(`d.gateway_id = $${params.length}`); }
      if (f.deviceId) { params.push(f.deviceId); where.push(`d.device_id = $${params.length}`); }
      if (f.state) { params.push(f.state); where.push(`d.state = $${params.length}`); }
      if (f.profile) { params.push(f.profile); where.push(`d.profile = $${params.length}`); }
      params.push(clampLimit(f.limit, 1000, 10_000));
      const r = await db.query<Record<string, unknown>>(
        `select d.gateway_id, d.device_id, d.org_path, d.profile, d.name, d.building, d.room, d.location, d.state,
                ${ms('d.last_seen')} as last_seen, d.expected_interval_ms, g.state as gateway_state, d.capabilities
           from devices d join gateways g on g.id = d.gateway_id
          where ${where.join(' and ')}
          order by d.org_path, d.gateway_id, d.device_id limit $${params.length}`,
        params,
      );
      return r.rows.map((x) => ({
        gatewayId: x.gateway_id as string,
        deviceId: x.device_id as string,
        orgPath: x.org_path as string,
        profile: x.profile as string,
        name: x.name as string,
        building: (x.building as string) ?? null,
        room: (x.room as string) ?? null,
        location: (x.location as string) ?? null,
        state: x.state as DeviceRow['state'],
        lastSeen: x.last_seen == null ? null : Number(x.last_seen),
        expectedIntervalMs: x.expected_interval_ms == null ? null : Number(x.expected_interval_ms),
        gatewayState: x.gateway_state as DeviceRow['gatewayState'],
        capabilities: parseCapabilities(x.capabilities),
      }));
    },

    async readings(scope, q) {
      if (!(q.from < q.to)) throw new RangeError(`readings: "from" (${q.from}) must be before "to" (${q.to}) — 起始时间须早于结束时间`);
      const resolution: Resolution = !q.resolution || q.resolution === 'auto' ? resolutionFor(q.to - q.from) : q.resolution;
      // Series in scope first (the scope lives on devices), then the time range on those series only.
      const params: unknown[] = [];
      const where = [scopeSql(scope, 'd.org_path', params)];
      params.push(q.device);
      where.push(`d.device_id = $${params.length}`);
      if (q.gatewayId) { params.push(q.gatewayId); where.push(`d.gateway_id = $${params.length}`); }
      const series = await db.query<{ gateway_id: string }>(
        `select d.gateway_id from devices d where ${where.join(' and ')}`,
        params,
      );
      if (series.rows.length === 0) return { resolution, points: [] };
      const gws = series.rows.map((s) => s.gateway_id);
      const limit = clampLimit(q.limit, 10_000, 100_000);
      const p = [gws, q.device, q.metric, q.from, q.to, limit];
      const sql =
        resolution === 'raw'
          ? `select gateway_id, ${ms('ts')} as ts, value, value as min, value as max, 1 as n from readings
              where gateway_id = any($1::text[]) and device_id = $2 and metric = $3
                and ts >= to_timestamp($4 / 1000.0) and ts < to_timestamp($5 / 1000.0)
              order by ts limit $6`
          : `select gateway_id, ${ms('bucket')} as ts, sum / n as value, min, max, n from readings_${resolution}
              where gateway_id = any($1::text[]) and device_id = $2 and metric = $3
                and bucket >= date_bin('${resolution === '1m' ? '1 minute' : '1 hour'}', to_timestamp($4 / 1000.0), timestamptz '2000-01-01 00:00:00+00')
                and bucket < to_timestamp($5 / 1000.0)
              order by bucket limit $6`;
      const r = await db.query<Record<string, unknown>>(sql, p);
      return {
        resolution,
        points: r.rows.map((x) => ({
          ts: Number(x.ts),
          value: Number(x.value),
          min: Number(x.min),
          max: Number(x.max),
          count: Number(x.n),
          gatewayId: x.gateway_id as string,
        })),
      };
    },

    async latest(scope, q = {}) {
      const params: unknown[] = [];
      const where = [scopeSql(scope, 'd.org_path', params)];
      if (q.device) { params.push(q.device); where.push(`l.device_id = $${params.length}`); }
      if (q.gatewayId) { params.push(q.gatewayId); where.push(`l.gateway_id = $${params.length}`); }
      if (q.metric) { params.push(q.metric); where.push(`l.metric = $${params.length}`); }
      params.push(clampLimit(q.limit, 10_000, 100_000));
      const r = await db.query<Record<string, unknown>>(
        `select l.gateway_id, l.device_id, d.org_path, l.metric, ${ms('l.ts')} as ts, l.value, l.quality
           from latest_readings l join devices d on d.gateway_id = l.gateway_id and d.device_id = l.device_id
          where ${where.join(' and ')}
          order by d.org_path, l.gateway_id, l.device_id, l.metric limit $${params.length}`,
        params,
      );
      return r.rows.map((x) => ({
        gatewayId: x.gateway_id as string,
        deviceId: x.device_id as string,
        orgPath: x.org_path as string,
        metric: x.metric as string,
        ts: Number(x.ts),
        value: Number(x.value),
        quality: x.quality as string,
      }));
    },

    async countsByRegion(scope) {
      // One row per child of the scope node (city of a province, county of a city, school of a
      // county…); at a leaf, the leaf itself.
      const depth = scope.orgPath.split('/').length + 1;
      const params: unknown[] = [depth];
      const gScope = scopeSql(scope, 'org_path', params);
      const dScope = scopeSql(scope, 'org_path', params);
      const r = await db.query<Record<string, unknown>>(
        `with g as (
           select array_to_string((string_to_array(org_path, '/'))[1:$1], '/') as region,
                  count(*) as gateways, count(*) filter (where state = 'online') as gateways_online
             from gateways where ${gScope} group by 1),
         d as (
           select array_to_string((string_to_array(org_path, '/'))[1:$1], '/') as region,
                  count(*) as devices, count(*) filter (where state = 'online') as devices_online,
                  count(*) filter (where state = 'offline') as devices_offline
             from devices where ${dScope} group by 1)
         select coalesce(g.region, d.region) as region, o.name_zh, o.name_en,
                coalesce(g.gateways, 0) as gateways, coalesce(g.gateways_online, 0) as gateways_online,
                coalesce(d.devices, 0) as devices, coalesce(d.devices_online, 0) as devices_online,
                coalesce(d.devices_offline, 0) as devices_offline
           from g full join d on d.region = g.region
           left join org_nodes o on o.path = coalesce(g.region, d.region)
          order by 1`,
        params,
      );
      return r.rows.map((x) => ({
        orgPath: x.region as string,
        nameZh: (x.name_zh as string) ?? null,
        nameEn: (x.name_en as string) ?? null,
        gateways: Number(x.gateways),
        gatewaysOnline: Number(x.gateways_online),
        devices: Number(x.devices),
        devicesOnline: Number(x.devices_online),
        devicesOffline: Number(x.devices_offline),
      }));
    },

    async countsByCategory(scope, q = {}) {
      const params: unknown[] = [];
      const dScope = scopeSql(scope, 'org_path', params);
      const eScope = scopeSql(scope, 'd.org_path', params);
      params.push(q.from ?? 0, q.to ?? 4_102_444_800_000);
      const r = await db.query<{ kind: CategoryCount['kind']; key: string; n: number }>(
        `select 'device_profile' as kind, profile as key, count(*) as n from devices where ${dScope} group by profile
         union all
         select 'event_type' as kind, e.type as key, count(*) as n
           from events e join devices d on d.gateway_id = e.gateway_id and d.device_id = e.device_id
          where ${eScope} and e.ts >= to_timestamp($${params.length - 1} / 1000.0) and e.ts < to_timestamp($${params.length} / 1000.0)
          group by e.type
         order by 1, 2`,
        params,
      );
      return r.rows.map((x) => ({ kind: x.kind, key: x.key, count: Number(x.n) }));
    },

    async listGateways(scope) {
      const params: unknown[] = [];
      const r = await db.query<Record<string, unknown>>(
        `select g.id, g.org_path, g.county, g.name, g.state, ${ms('g.last_seen')} as last_seen, g.version,
                g.buffer_depth, g.buffer_dropped,
                (select count(*) from devices d where d.gateway_id = g.id) as devices
           from gateways g where ${scopeSql(scope, 'g.org_path', params)} order by g.org_path, g.id`,
        params,
      );
      return r.rows.map((x) => ({
        id: x.id as string,
        orgPath: x.org_path as string,
        county: x.county as string,
        name: x.name as string,
        state: x.state as GatewayRow['state'],
        lastSeen: x.last_seen == null ? null : Number(x.last_seen),
        version: (x.version as string) ?? null,
        bufferDepth: x.buffer_depth == null ? null : Number(x.buffer_depth),
        bufferDropped: x.buffer_dropped == null ? null : Number(x.buffer_dropped),
        devices: Number(x.devices),
      }));
    },

    async deadLetters(scope, q = {}) {
      const params: unknown[] = [];
      let where = scopeSql(scope, 'org_path', params);
      // Messages whose topic could not even be read belong to no region: province-wide staff see them.
      if (!scope.orgPath.includes('/')) where = `(${where} or org_path is null)`;
      const conds = [where];
      if (q.since !== undefined) { params.push(q.since); conds.push(`received_at >= to_timestamp($${params.length} / 1000.0)`); }
      if (q.reason) { params.push(q.reason); conds.push(`reason = $${params.length}`); }
      if (q.gatewayId) { params.push(q.gatewayId); conds.push(`gateway_id = $${params.length}`); }
      if (q.ids) { params.push(q.ids); conds.push(`id = any($${params.length}::bigint[])`); }
      if (q.unreplayed !== undefined) conds.push(q.unreplayed ? 'replayed_at is null' : 'replayed_at is not null');
      params.push(clampLimit(q.limit, 100, 10_000));
      const r = await db.query<Record<string, unknown>>(
        `select id, ${ms('received_at')} as received_at, topic, gateway_id, org_path, reason, detail, payload, payload_bytes,
                unit, ${ms('replayed_at')} as replayed_at, replay_result
           from dead_letters where ${conds.join(' and ')} order by id desc limit $${params.length}`,
        params,
      );
      return r.rows.map((x) => ({
        id: Number(x.id),
        receivedAt: Number(x.received_at),
        topic: x.topic as string,
        gatewayId: (x.gateway_id as string) ?? null,
        orgPath: (x.org_path as string) ?? null,
        reason: x.reason as string,
        detail: x.detail as string,
        payload: x.payload as string,
        payloadBytes: Number(x.payload_bytes),
        unit: (x.unit as DeadLetterRow['unit']) ?? 'message',
        replayedAt: x.replayed_at == null ? null : Number(x.replayed_at),
        replayResult: (x.replay_result as string) ?? null,
      }));
    },

    async events(scope, q = {}) {
      const params: unknown[] = [];
      const conds = [scopeSql(scope, 'd.org_path', params)];
      if (q.device) { params.push(q.device); conds.push(`e.device_id = $${params.length}`); }
      if (q.gatewayId) { params.push(q.gatewayId); conds.push(`e.gateway_id = $${params.length}`); }
      if (q.type) { params.push(q.type); conds.push(`e.type = $${params.length}`); }
      if (q.from !== undefined) { params.push(q.from); conds.push(`e.ts >= to_timestamp($${params.length} / 1000.0)`); }
      if (q.to !== undefined) { params.push(q.to); conds.push(`e.ts < to_timestamp($${params.length} / 1000.0)`); }
      params.push(clampLimit(q.limit, 500, 10_000));
      const r = await db.query<Record<string, unknown>>(
        `select e.gateway_id, e.seq, e.device_id, d.org_path, e.type, ${ms('e.ts')} as ts, e.priority, e.drill, e.data
           from events e join devices d on d.gateway_id = e.gateway_id and d.device_id = e.device_id
          where ${conds.join(' and ')} order by e.ts desc limit $${params.length}`,
        params,
      );
      return r.rows.map((x) => ({
        gatewayId: x.gateway_id as string,
        seq: Number(x.seq),
        deviceId: x.device_id as string,
        orgPath: x.org_path as string,
        type: x.type as string,
        ts: Number(x.ts),
        priority: x.priority as EventRow['priority'],
        drill: Boolean(x.drill),
        data: (typeof x.data === 'string' ? JSON.parse(x.data) : x.data) as Record<string, unknown>,
      }));
    },
  };
}
