// The central store: org tree, gateways, devices, readings, events, dead letters, and the scoped
// queries that dashboards and rules use. Same code on PostgreSQL (TimescaleDB when present) and PGlite.

import {
  SHANDONG,
  SHANDONG_CITIES,
  parseOrgPath,
  regionPath,
  silentLogger,
  systemClock,
  type Clock,
  type GatewayStatus,
  type Logger,
  type OrgLevel,
} from '../contract/index.ts';
import { hasTimescale, migrate, openDb, redactUrl, type Db } from './db.ts';
import { createPostgresSink, setupTimescale, type PostgresSink } from './postgres/writer.ts';
import { createQueries, type Queries } from './queries.ts';
import { hashSecret, verifyNothing, verifySecret } from './secrets.ts';
import type { DeadLetterReason, GatewayInfo } from './types.ts';

export class StoreInputError extends Error {
  constructor(message: string, readonly field: string) {
    super(message);
    this.name = 'StoreInputError';
  }
}

export interface OrgNodeInput {
  path: string;
  nameZh: string;
  nameEn?: string;
}

export interface RegisterGatewayInput {
  id: string;
  county: string;
  orgPath: string;
  name?: string;
  password: string;
}

export interface DeadLetterInput {
  topic: string;
  gatewayId?: string | null;
  orgPath?: string | null;
  reason: DeadLetterReason;
  detail: string;
  payload: Buffer | string;
  /** 'message' (default): the payload is the whole MQTT message; 'record': one record of a valid batch */
  unit?: 'message' | 'record';
}

export interface Store {
  readonly db: Db;
  readonly engine: 'postgres' | 'pglite';
  /** readings in a TimescaleDB hypertable with continuous aggregates */
  readonly timescale: boolean;
  readonly sink: PostgresSink;
  readonly queries: Queries;
  seedOrgTree(opts?: { demo?: boolean }): Promise<number>;
  upsertOrgNode(node: OrgNodeInput): Promise<void>;
  registerGateway(input: RegisterGatewayInput): Promise<GatewayInfo>;
  /** the gateway when the password matches, else null (same time either way) */
  verifyGateway(id: string, password: string): Promise<GatewayInfo | null>;
  getGateway(id: string): Promise<GatewayInfo | null>;
  /** Forget a gateway centrally (its stored readings and events stay as history); false when unknown. */
  removeGateway(id: string): Promise<boolean>;
  /**
   * Apply a gateway's status (birth with devices, or the last will `offline`). Returns the gateway's
   * org path when the status was newer than the one already applied (so exactly one worker of a
   * share group reports it), null when it was stale or the gateway is unknown.
   */
  applyGatewayStatus(status: GatewayStatus): Promise<{ orgPath: string; county: string } | null>;
  recordDeadLetter(d: DeadLetterInput): Promise<void>;
  /**
   * Create partitions ahead, drop expired ones (no-op on TimescaleDB, whose policies do it), and
   * forget dedup keys below the gateways' floors (record_seqs; the writer also does so as it goes).
   */
  maintain(): Promise<{ dropped: string[]; pruned: number }>;
  close(): Promise<void>;
}

export interface OpenStoreOptions {
  log?: Logger;
  clock?: Clock;
  /** days of raw readings kept; default 90 */
  retentionDays?: number;
  /** when the Db is handed in, whether close() closes it too (default false) */
  ownDb?: boolean;
}

/** Demo org nodes: the demo county, a second county and the two schools (see the team brief). */
export const DEMO_ORG_NODES: OrgNodeInput[] = [
  { path: '37/3701/370102', nameZh: '历下区', nameEn: 'Lixia District' },
  { path: '37/3701/370103', nameZh: '市中区', nameEn: 'Shizhong District' },
  { path: '37/3701/370102/3737000001', nameZh: '济南市历下区示范中学', nameEn: 'Lixia Demonstration Middle School, Jinan' },
  { path: '37/3701/370103/3737000002', nameZh: '济南市市中区实验学校', nameEn: 'Shizhong Experimental School, Jinan' },
];

/**
 * Open the store: a database URL (`postgres://…`, `pglite:DIR`, `pglite:memory`) or an open Db.
 * Runs the migrations and, on TimescaleDB, its policies and continuous aggregates.
 */
export async function openStore(urlOrDb: string | Db, opts: OpenStoreOptions = {}): Promise<Store> {
  const log = (opts.log ?? silentLogger).child('store');
  const clock = opts.clock ?? systemClock;
  const retentionDays = opts.retentionDays ?? 90;
  let db: Db;
  let ownDb: boolean;
  if (typeof urlOrDb === 'string') {
    try {
      db = await openDb(urlOrDb);
    } catch (e) {
      // the driver's error stays as the cause: its code says whether waiting can help (store-wait.ts)
      throw new Error(`cannot open database ${redactUrl(urlOrDb)}: ${(e as Error).message} (check DATABASE_URL and that the server runs)`, { cause: e });
    }
    ownDb = true;
  } else {
    db = urlOrDb;
    ownDb = opts.ownDb ?? false;
  }
  let timescale: boolean;
  let sink: PostgresSink;
  try {
    await migrate(db);
    // Migration 002 chose: a hypertable where TimescaleDB is loaded, unless the database sets
    // xiaoan.timescale = off (docs/configuration.md); the store follows what readings is.
    timescale = db.engine === 'postgres' && (await hasTimescale(db)) && (await readingsIsHypertable(db));
    if (db.engine === 'postgres' && !timescale && (await timescaleTurnedOff(db))) log.info('xiaoan.timescale = off: native partitions');
    if (timescale) await setupTimescale(db, retentionDays, log);
    sink = createPostgresSink(db, { timescale, retentionDays, log: log.child('postgres'), now: () => clock.now() });
    await sink.partitions.ahead();
  } catch (e) {
    // the server went away half way (or refused a migration): nothing of this attempt stays open
    if (ownDb) await db.close().catch(() => {});
    throw e;
  }
  log.info('store open', { engine: db.engine, timescale });

  const queries = createQueries(db);

  const toInfo = (r: { id: string; org_path: string; county: string; name: string }): GatewayInfo => ({
    id: r.id,
    orgPath: r.org_path,
    county: r.county,
    name: r.name,
  });

  const store: Store = {
    db,
    engine: db.engine,
    timescale,
    sink,
    queries,

    async upsertOrgNode(node) {
      let ref;
      try {
        ref = parseOrgPath(node.path);
      } catch (e) {
        throw new StoreInputError(`org node: ${(e as Error).message}`, 'path');
      }
      if (!node.nameZh) throw new StoreInputError(`org node ${node.path}: nameZh (中文名称) is required`, 'nameZh');
      const parent = node.path.includes('/') ? node.path.slice(0, node.path.lastIndexOf('/')) : null;
      await db.query(
        `insert into org_nodes (path, parent, level, code, name_zh, name_en) values ($1, $2, $3, $4, $5, $6)
         on conflict (path) do update set name_zh = excluded.name_zh, name_en = excluded.name_en`,
        [node.path, parent, ref.level satisfies OrgLevel, ref.code, node.nameZh, node.nameEn ?? ''],
      );
    },

    async seedOrgTree(o = {}) {
      const nodes: OrgNodeInput[] = [
        { path: SHANDONG.code, nameZh: SHANDONG.name.zh, nameEn: SHANDONG.name.en },
        ...SHANDONG_CITIES.map((c) => ({ path: `37/${c.code}`, nameZh: c.zh, nameEn: c.en })),
        ...(o.demo ? DEMO_ORG_NODES : []),
      ];
      for (const n of nodes) await store.upsertOrgNode(n);
      return nodes.length;
    },

    async registerGateway(input) {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(input.id)) {
        throw new StoreInputError(`gateway id "${input.id}" must be 1–64 letters, digits, . _ - (网关编号格式错误)`, 'id');
      }
      let region: string;
      try {
        region = regionPath(input.county);
        parseOrgPath(input.orgPath);
      } catch (e) {
        throw new StoreInputError(`gateway ${input.id}: ${(e as Error).message}`, 'orgPath');
      }
      if (input.orgPath !== region && !input.orgPath.startsWith(region + '/')) {
        throw new StoreInputError(
          `gateway ${input.id}: org path ${input.orgPath} does not lie in county ${input.county} (${region}); 网关所属机构须在其区县之下`,
          'orgPath',
        );
      }
      if (!input.password || input.password.length < 8) {
        throw new StoreInputError(`gateway ${input.id}: password must have at least 8 characters (密码至少 8 位)`, 'password');
      }
      const hash = await hashSecret(input.password);
      const r = await db.query<{ id: string; org_path: string; county: string; name: string }>(
        `insert into gateways (id, org_path, county, name, secret_hash) values ($1, $2, $3, $4, $5)
         on conflict (id) do update set org_path = excluded.org_path, county = excluded.county,
           name = excluded.name, secret_hash = excluded.secret_hash
         returning id, org_path, county, name`,
        [input.id, input.orgPath, input.county, input.name ?? input.id, hash],
      );
      return toInfo(r.rows[0]!);
    },

    async verifyGateway(id, password) {
      const r = await db.query<{ id: string; org_path: string; county: string; name: string; secret_hash: string }>(
        'select id, org_path, county, name, secret_hash from gateways where id = $1',
        [id],
      );
      const row = r.rows[0];
      if (!row) return verifyNothing(password).then(() => null);
      return (await verifySecret(password, row.secret_hash)) ? toInfo(row) : null;
    },

    async getGateway(id) {
      const r = await db.query<{ id: string; org_path: string; county: string; name: string }>(
        'select id, org_path, county, name from gateways where id = $1',
        [id],
      );
      return r.rows[0] ? toInfo(r.rows[0]) : null;
    },

    async removeGateway(id) {
      return db.transaction(async (tx) => {
        await tx.query('delete from devices where gateway_id = $1', [id]);
        const r = await tx.query('delete from gateways where id = $1', [id]);
        return r.rowCount > 0;
      });
    },

    async applyGatewayStatus(status) {
      return db.transaction(async (tx) => {
        const g = await tx.query<{ org_path: string; county: string }>(
          `update gateways set state = $2, last_seen = greatest(last_seen, to_timestamp($3 / 1000.0)),
             status_ts = to_timestamp($3 / 1000.0), version = coalesce($4, version),
             buffer_depth = coalesce($5, buffer_depth), buffer_dropped = coalesce($6, buffer_dropped)
           where id = $1 and (status_ts is null or status_ts <= to_timestamp($3 / 1000.0))
           returning org_path, county`,
          [status.gateway, status.state, status.ts, status.version ?? null, status.buffer?.depth ?? null, status.buffer?.dropped ?? null],
        );
        const gw = g.rows[0];
        if (!gw) return null;
        if (status.state === 'offline') {
          // Behind an offline gateway nothing is known to be online.
          await tx.query(`update devices set state = 'offline' where gateway_id = $1 and state <> 'offline'`, [status.gateway]);
        }
        if (status.state === 'online' && status.devices) {
          // A birth lists every device the gateway has; one it no longer lists was removed there.
          // Its readings and alerts stay as history; only the live device list forgets it.
          await tx.query('delete from devices where gateway_id = $1 and not (device_id = any($2::text[]))', [status.gateway, status.devices.map((d) => d.id)]);
        }
        for (const d of status.devices ?? []) {
          await tx.query(
            `insert into devices as d (gateway_id, device_id, org_path, profile, name, location, state, last_seen, expected_interval_ms, building, room, capabilities)
             values ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8 / 1000.0), $9, $10, $11, $12::jsonb)
             on conflict (gateway_id, device_id) do update set
               profile = excluded.profile, name = excluded.name, location = coalesce(excluded.location, d.location),
               capabilities = coalesce(excluded.capabilities, d.capabilities),
               building = coalesce(excluded.building, d.building), room = coalesce(excluded.room, d.room),
               state = excluded.state, expected_interval_ms = coalesce(excluded.expected_interval_ms, d.expected_interval_ms),
               last_seen = greatest(d.last_seen, excluded.last_seen)`,
            [status.gateway, d.id, gw.org_path, d.profile, d.name ?? d.id, d.location ?? null, d.state, d.lastSeen, d.expectedIntervalMs ?? null, d.building ?? null, d.room ?? null, d.capabilities ? JSON.stringify(d.capabilities) : null],
          );
        }
        return { orgPath: gw.org_path, county: gw.county };
      });
    },

    async recordDeadLetter(d) {
      const buf = typeof d.payload === 'string' ? Buffer.from(d.payload) : d.payload;
      // Kept as text a person can read (NUL removed, capped at 256 KiB); payload_bytes says how long it was.
      const text = buf.subarray(0, 256 * 1024).toString('utf8').replace(/\u0000/g, '');
      await db.query(
        `insert into dead_letters (topic, gateway_id, org_path, reason, detail, payload, payload_bytes, unit)
         values ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [d.topic.slice(0, 1024), d.gatewayId ?? null, d.orgPath ?? null, d.reason, d.detail.slice(0, 2000), text, buf.length, d.unit ?? 'message'],
      );
    },

    async maintain() {
      await sink.partitions.ahead();
      const dropped = await sink.partitions.dropExpired();
      let pruned = 0;
      for (let more = true; more; ) {
        const r = await sink.pruneSeqs();
        pruned += r.deleted;
        more = r.more;
      }
      return { dropped, pruned };
    },

    async close() {
      if (ownDb) await db.close();
    },
  };
  return store;
}

async function timescaleTurnedOff(db: Db): Promise<boolean> {
  const r = await db.query<{ v: string | null }>("select current_setting('xiaoan.timescale', true) as v");
  return ['off', 'false', 'no', '0'].includes((r.rows[0]?.v ?? '').toLowerCase());
}

async function readingsIsHypertable(db: Db): Promise<boolean> {
  try {
    const r = await db.query<{ n: number }>(
      "select count(*)::int as n from timescaledb_information.hypertables where hypertable_name = 'readings'",
    );
    return (r.rows[0]?.n ?? 0) > 0;
  } catch {
    return false;
  }
}
