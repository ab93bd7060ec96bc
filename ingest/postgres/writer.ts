// The PostgreSQL sink: writes reading and event batches exactly once per (gateway, seq) and tells
// which records were new.
//
// PostgreSQL: the rows of many messages are streamed with COPY (pg-copy-streams), in chunks that
// honour the stream's backpressure, straight into `readings`; the latest values, the devices'
// last-seen times and the marks of the (gateway, minute) buckets touched follow in one statement of
// the same transaction. When the batch holds a record already stored (a redelivery), the COPY fails
// on the dedup index, and the batch goes through a temporary staging table and
// `insert … on conflict do nothing returning`, which tells which records were new. One transaction
// either way: a crash before commit leaves nothing, so the unacknowledged messages are redelivered.
// PGlite: the staging statement reads the rows from unnest() over array parameters (a multi-row insert).
// Rollups (native PostgreSQL / PGlite) are recomputed from the raw rows of the marked buckets by
// refreshRollups(), off the ingest path; on TimescaleDB continuous aggregates do it.

import { from as copyFrom } from 'pg-copy-streams';
import type pg from 'pg';
import type { DeviceEvent, Logger, Reading } from '../../contract/index.ts';
import type { Db, Queryable } from '../db.ts';

export interface ReadingRows {
  gatewayId: string;
  readings: Reading[];
  /** the batch's floor (docs/delivery.md) */
  floor?: number;
}
export interface EventRows {
  gatewayId: string;
  events: DeviceEvent[];
  /** the batch's floor (docs/delivery.md) */
  floor?: number;
}

/** `${gatewayId}\u0000${seq}` of every record that was new to the database. */
export type NewKeys = Set<string>;
export const recordKey = (gatewayId: string, seq: number): string => `${gatewayId}\u0000${seq}`;

export interface SinkError extends Error {
  /** SQLSTATE when the server gave one */
  code?: string;
  /** whether trying again can help (connection lost, server restarting, deadlock…) */
  retryable: boolean;
}

/**
 * Classify a database error by its SQLSTATE (an explicit list, never the message text): connection
 * exceptions (08), operator intervention (57P01–57P03: shutdown, crash, cannot connect now),
 * insufficient resources (53), serialization failure and deadlock (40001, 40P01) are retryable, as
 * is any error without a SQLSTATE (socket closed, refused, timeout). Everything else is about the
 * data or the statement, and retrying the same rows would fail the same way.
 */
export function classifyDbError(e: unknown): SinkError {
  const err = (e instanceof Error ? e : new Error(String(e))) as SinkError;
  const code = typeof err.code === 'string' ? err.code : undefined;
  // A SQLSTATE comes from the server, in an error that carries its severity; socket errors
  // (EPIPE, ECONNRESET…) have codes too, and may even look like one.
  const fromServer = typeof (err as { severity?: unknown }).severity === 'string';
  const sqlstate = fromServer && code && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
  err.retryable =
    !sqlstate ||
    sqlstate.startsWith('08') ||
    sqlstate.startsWith('53') ||
    ['57P01', '57P02', '57P03', '40001', '40P01', '55P03'].includes(sqlstate);
  return err;
}

export interface StorageOptions {
  /** TimescaleDB hypertable and continuous aggregates (rollups maintained by TimescaleDB) */
  timescale: boolean;
  /** days of raw readings kept (partitions / chunks older than that are dropped) */
  retentionDays: number;
  log: Logger;
  now: () => number;
}

const DAY = 86_400_000;

function dayKey(ms: number): string {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}${String(d.getUTCDate()).padStart(2, '0')}`;
}

/** Native daily partitions of `readings`, created ahead of the data; far-off clocks land in the default partition. */
export class PartitionKeeper {
  private known = new Set<string>();
  private loaded = false;
  constructor(private db: Db, private opts: StorageOptions) {}

  private async load(): Promise<void> {
    const r = await this.db.query<{ name: string }>(
      `select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
        join pg_class p on p.oid = i.inhparent where p.relname = 'readings'`,
    );
    for (const row of r.rows) if (/^readings_p\d{8}$/.test(row.name)) this.known.add(row.name.slice(10));
    this.loaded = true;
  }

  /** Make sure a partition exists for every day of `tsList` that lies in the kept window. */
  async ensure(tsList: Iterable<number>): Promise<void> {
    if (this.opts.timescale) return;
    if (!this.loaded) await this.load();
    const now = this.opts.now();
    const lo = now - this.opts.retentionDays * DAY;
    const hi = now + 2 * DAY;
    const wanted = new Set<number>();
    for (const ts of tsList) {
      if (ts < lo || ts > hi) continue;
      const start = Math.floor(ts / DAY) * DAY;
      if (!this.known.has(dayKey(start))) wanted.add(start);
    }
    for (const start of wanted) await this.create(start);
  }

  /** Create today's and tomorrow's partitions (called periodically so writes rarely wait for DDL). */
  async ahead(): Promise<void> {
    const now = this.opts.now();
    await this.ensure([now, now + DAY]);
  }

  private async create(start: number): Promise<void> {
    const key = dayKey(start);
    const from = new Date(start).toISOString();
    const to = new Date(start + DAY).toISOString();
    try {
      await this.db.exec(
        `create table if not exists readings_p${key} partition of readings for values from ('${from}') to ('${to}')`,
      );
      this.known.add(key);
    } catch (e) {
      const err = e as { code?: string; message: string };
      // 42P07 duplicate table (another worker won the race); 23514: the default partition already
      // holds rows of that day, so that day stays in the default partition.
      if (err.code === '42P07') this.known.add(key);
      else if (err.code === '23514' || /would be violated by some row/.test(err.message)) {
        this.known.add(key);
        this.opts.log.warn('readings of this day stay in the default partition: it already holds some', { day: key });
      } else throw e;
    }
  }

  /** Drop daily partitions older than the retention window. Returns the names dropped. */
  async dropExpired(): Promise<string[]> {
    if (this.opts.timescale) return [];
    if (!this.loaded) await this.load();
    const cutoff = dayKey(this.opts.now() - this.opts.retentionDays * DAY);
    const dropped: string[] = [];
    for (const key of [...this.known].sort()) {
      if (key >= cutoff) break;
      await this.db.exec(`drop table if exists readings_p${key}`);
      this.known.delete(key);
      dropped.push(`readings_p${key}`);
    }
    return dropped;
  }
}

// The statement that moves staged rows into readings. `src` yields
// (gateway_id, seq, device_id, metric, ts_ms, value, quality).
const ORIGIN = "timestamptz '2000-01-01 00:00:00+00'";

function moveReadingsSql(src: string, timescale: boolean): string {
  return `
with ins as (
  insert into readings (gateway_id, seq, device_id, metric, ts, value, quality)
  select gateway_id, seq, device_id, metric, to_timestamp(ts_ms / 1000.0), value, quality from ${src}
  on conflict (gateway_id, seq, ts) do nothing
  returning gateway_id, seq, device_id, metric, ts, value, quality
),
latest as (
  insert into latest_readings as l (gateway_id, device_id, metric, ts, value, quality)
  select distinct on (gateway_id, device_id, metric) gateway_id, device_id, metric, ts, value, quality
    from ins order by gateway_id, device_id, metric, ts desc
  on conflict (gateway_id, device_id, metric) do update
    set ts = excluded.ts, value = excluded.value, quality = excluded.quality
    where l.ts <= excluded.ts
),
seen as (
  insert into devices as d (gateway_id, device_id, org_path, last_seen)
  select i.gateway_id, i.device_id, min(g.org_path), max(i.ts) from ins i join gateways g on g.id = i.gateway_id
   group by 1, 2 order by 1, 2
  on conflict (gateway_id, device_id) do update
    set last_seen = greatest(d.last_seen, excluded.last_seen)
)${timescale ? '' : `,
dirty as (
  insert into rollup_dirty as m (gateway_id, bucket)
  select distinct gateway_id, date_bin('1 minute', ts, ${ORIGIN}) from ins order by 1, 2
  on conflict (gateway_id, bucket) do update set marked_at = now()
)`}
select gateway_id, seq from ins`;
}

const UNNEST_READINGS = `unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[])
  as s(gateway_id, seq, device_id, metric, ts_ms, value, quality)`;

export interface PostgresSink {
  writeReadings(batches: ReadingRows[]): Promise<NewKeys>;
  writeEvents(batches: EventRows[]): Promise<NewKeys>;
  partitions: PartitionKeeper;
  /** rows streamed per COPY chunk (bytes); the stream's own backpressure governs beyond that */
  readonly copyChunkBytes: number;
  /** how often the direct COPY met a redelivered record and the batch went through staging */
  stats(): { fallbacks: number; rollupRefreshes: number };
  /**
   * Recompute the marked (gateway, minute) buckets of readings_1m from the raw rows and their hours
   * of readings_1h. Only buckets that closed `settleMs` ago (default 5 s) unless `all`. Returns the
   * number of buckets done. No-op on TimescaleDB (its continuous aggregates do it).
   */
  refreshRollups(opts?: { settleMs?: number; all?: boolean }): Promise<number>;
}

export function createPostgresSink(db: Db, opts: StorageOptions & { copyChunkBytes?: number }): PostgresSink {
  const partitions = new PartitionKeeper(db, opts);
  const copyChunkBytes = opts.copyChunkBytes ?? 256 * 1024;
  const moveFromStaging = moveReadingsSql('readings_in', opts.timescale);
  const moveFromUnnest = moveReadingsSql(UNNEST_READINGS, opts.timescale);
  const stagedClients = new WeakSet<pg.PoolClient>();
  const clock = opts.now;
  let stagingUntil = 0;
  let fallbacks = 0;
  let rollupRefreshes = 0;
  const aggregatesSql = `
with latest as (
  insert into latest_readings as l (gateway_id, device_id, metric, ts, value, quality)
  select g, d, m, to_timestamp(t / 1000.0), v, q
    from unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::text[]) as u(g, d, m, t, v, q)
   order by g, d, m
  on conflict (gateway_id, device_id, metric) do update
    set ts = excluded.ts, value = excluded.value, quality = excluded.quality
    where l.ts <= excluded.ts
),
seen as (
  insert into devices as dv (gateway_id, device_id, org_path, last_seen)
  select u.g, u.d, gw.org_path, to_timestamp(u.t / 1000.0)
    from unnest($7::text[], $8::text[], $9::float8[]) as u(g, d, t) join gateways gw on gw.id = u.g
   order by 1, 2
  on conflict (gateway_id, device_id) do update set last_seen = greatest(dv.last_seen, excluded.last_seen)
)${opts.timescale ? '' : `,
dirty as (
  insert into rollup_dirty as m (gateway_id, bucket)
  select g, to_timestamp(b / 1000.0) from unnest($10::text[], $11::float8[]) as u(g, b) order by 1, 2
  on conflict (gateway_id, bucket) do update set marked_at = now()
)`}
select 1`;

  async function copyInto(client: pg.PoolClient, batches: ReadingRows[], target: 'readings' | 'readings_in'): Promise<void> {
    const stream = client.query(
      copyFrom(`copy ${target} (gateway_id, seq, device_id, metric, ${target === 'readings' ? 'ts' : 'ts_ms'}, value, quality) from stdin`),
    );
    const done = new Promise<void>((resolve, reject) => {
      stream.on('finish', resolve);
      stream.on('error', reject);
    });
    done.catch(() => {}); // awaited below; a failure while writing rejects through flush() first
    let chunk = '';
    const flush = async (final: boolean) => {
      if (chunk.length === 0) return;
      const ok = stream.write(chunk);
      chunk = '';
      if (!ok && !final) await new Promise<void>((resolve, reject) => {
        stream.once('drain', resolve);
        stream.once('error', reject);
      });
    };
    // Ids, metric names and qualities are checked by the contract schemas (no tab, newline or
    // backslash can occur), so the text format needs no escaping.
    const direct = target === 'readings';
    for (const b of batches) {
      for (const r of b.readings) {
        chunk += `${b.gatewayId}\t${r.seq}\t${r.device}\t${r.metric}\t${direct ? new Date(r.ts).toISOString() : r.ts}\t${r.value}\t${r.quality}\n`;
        if (chunk.length >= copyChunkBytes) await flush(false);
      }
    }
    await flush(true);
    stream.end();
    await done;
  }

  async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await pool.connect();
    let broken = false;
    // A server that goes away mid-transaction makes the client emit 'error' besides failing the
    // query; without a listener that would crash the process.
    const onError = () => { broken = true; };
    client.on('error', onError);
    try {
      // JIT compiling these short statements costs more than it saves (hundreds of ms on a busy machine)
      await client.query('begin; set local jit = off');
      const out = await fn(client);
      await client.query('commit');
      return out;
    } catch (e) {
      const err = classifyDbError(e);
      if (err.retryable) broken = true;
      await client.query('rollback').catch(() => { broken = true; });
      throw err;
    } finally {
      client.off('error', onError);
      client.release(broken ? true : undefined);
    }
  }

  function allKeys(batches: ReadingRows[]): NewKeys {
    const out: NewKeys = new Set();
    for (const b of batches) for (const r of b.readings) out.add(recordKey(b.gatewayId, r.seq));
    return out;
  }

  /** Latest values, last-seen times and touched (gateway, minute) buckets of the rows, aggregated in memory. */
  function aggregateParams(batches: ReadingRows[]): unknown[] {
    const latest = new Map<string, { g: string; d: string; m: string; ts: number; v: number; q: string }>();
    const seen = new Map<string, { g: string; d: string; ts: number }>();
    const dirty = new Map<string, { g: string; b: number }>();
    for (const bt of batches) {
      const g = bt.gatewayId;
      for (const r of bt.readings) {
        const series = `${g}\u0000${r.device}\u0000${r.metric}`;
        const l = latest.get(series);
        if (!l || r.ts >= l.ts) latest.set(series, { g, d: r.device, m: r.metric, ts: r.ts, v: r.value, q: r.quality });
        const dk = `${g}\u0000${r.device}`;
        const sn = seen.get(dk);
        if (!sn || r.ts > sn.ts) seen.set(dk, { g, d: r.device, ts: r.ts });
        if (!opts.timescale) {
          const b = Math.floor(r.ts / 60_000) * 60_000;
          const bk = `${g}\u0000${b}`;
          if (!dirty.has(bk)) dirty.set(bk, { g, b });
        }
      }
    }
    const lc: unknown[][] = [[], [], [], [], [], []];
    for (const l of latest.values()) { lc[0]!.push(l.g); lc[1]!.push(l.d); lc[2]!.push(l.m); lc[3]!.push(l.ts); lc[4]!.push(l.v); lc[5]!.push(l.q); }
    const sc: unknown[][] = [[], [], []];
    for (const x of seen.values()) { sc[0]!.push(x.g); sc[1]!.push(x.d); sc[2]!.push(x.ts); }
    const dc: unknown[][] = [[], []];
    for (const x of dirty.values()) { dc[0]!.push(x.g); dc[1]!.push(x.b); }
    return [...lc, ...sc, ...(opts.timescale ? [] : dc)];
  }

  async function keysOf(rows: { gateway_id: string; seq: number }[]): Promise<NewKeys> {
    const out: NewKeys = new Set();
    for (const r of rows) out.add(recordKey(r.gateway_id, Number(r.seq)));
    return out;
  }

  async function ensurePartitions(batches: ReadingRows[]): Promise<void> {
    if (opts.timescale) return;
    // one ts per day is enough; batches are mostly within a few seconds
    const days = new Map<number, number>();
    for (const b of batches) for (const r of b.readings) days.set(Math.floor(r.ts / DAY), r.ts);
    await partitions.ensure(days.values());
  }

  return {
    partitions,
    copyChunkBytes,
    stats: () => ({ fallbacks, rollupRefreshes }),
    async refreshRollups(o = {}) {
      if (opts.timescale) return 0;
      const cutoff = o.all ? 4_102_444_800_000 : clock() - (o.settleMs ?? 5_000) - 60_000;
      try {
        return await db.transaction(async (tx) => {
          const marks = await tx.query<{ gateway_id: string; b: number }>(
            `delete from rollup_dirty where bucket < to_timestamp($1 / 1000.0)
             returning gateway_id, (extract(epoch from bucket) * 1000)::float8 as b`,
            [cutoff],
          );
          if (marks.rows.length === 0) return 0;
          const g = marks.rows.map((m) => m.gateway_id);
          const b = marks.rows.map((m) => Number(m.b));
          await tx.query(
            `insert into readings_1m as r (bucket, gateway_id, device_id, metric, n, sum, min, max)
             select d.bucket, x.gateway_id, x.device_id, x.metric, count(*), sum(x.value), min(x.value), max(x.value)
               from (select g, to_timestamp(b / 1000.0) as bucket from unnest($1::text[], $2::float8[]) as u(g, b)) d
               join readings x on x.gateway_id = d.g and x.ts >= d.bucket and x.ts < d.bucket + interval '1 minute'
              group by 1, 2, 3, 4 order by 2, 3, 4, 1
             on conflict (gateway_id, device_id, metric, bucket) do update
               set n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max`,
            [g, b],
          );
          await tx.query(
            `insert into readings_1h as r (bucket, gateway_id, device_id, metric, n, sum, min, max)
             select h.hour, m.gateway_id, m.device_id, m.metric, sum(m.n), sum(m.sum), min(m.min), max(m.max)
               from (select distinct g, date_bin('1 hour', to_timestamp(b / 1000.0), ${ORIGIN}) as hour
                       from unnest($1::text[], $2::float8[]) as u(g, b)) h
               join readings_1m m on m.gateway_id = h.g and m.bucket >= h.hour and m.bucket < h.hour + interval '1 hour'
              group by 1, 2, 3, 4 order by 2, 3, 4, 1
             on conflict (gateway_id, device_id, metric, bucket) do update
               set n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max`,
            [g, b],
          );
          rollupRefreshes++;
          return marks.rows.length;
        });
      } catch (e) {
        throw classifyDbError(e);
      }
    },
    async writeReadings(batches) {
      if (batches.every((b) => b.readings.length === 0)) return new Set();
      await ensurePartitions(batches);
      if (db.engine === 'postgres' && db.pool) {
        const pool = db.pool;
        // Fast path: rows go straight into `readings` by COPY — as fast as the table takes them —
        // and the rollups, latest values and last-seen times, aggregated here, follow in one
        // statement of the same transaction. A redelivered record makes the COPY fail on the
        // dedup index (23505): the transaction is rolled back and the batch goes the staging way,
        // which skips what is already stored. After such a fallback the staging way is used for a
        // while, since redeliveries come in runs (after a restart).
        if (clock() >= stagingUntil) {
          try {
            await inTransaction(pool, async (client) => {
              await copyInto(client, batches, 'readings');
              await client.query(aggregatesSql, aggregateParams(batches));
            });
            return allKeys(batches);
          } catch (e) {
            if ((e as SinkError).code !== '23505') throw e;
            stagingUntil = clock() + 30_000;
            fallbacks++;
          }
        }
        const r = await inTransaction(pool, async (client) => {
          if (!stagedClients.has(client)) {
            await client.query(`create temp table if not exists readings_in (
              gateway_id text, seq bigint, device_id text, metric text, ts_ms double precision,
              value double precision, quality text) on commit delete rows`);
            stagedClients.add(client);
          }
          await copyInto(client, batches, 'readings_in');
          return client.query<{ gateway_id: string; seq: number }>(moveFromStaging);
        });
        return keysOf(r.rows);
      }
      const cols: unknown[][] = [[], [], [], [], [], [], []];
      for (const b of batches) {
        for (const r of b.readings) {
          cols[0]!.push(b.gatewayId); cols[1]!.push(r.seq); cols[2]!.push(r.device); cols[3]!.push(r.metric);
          cols[4]!.push(r.ts); cols[5]!.push(r.value); cols[6]!.push(r.quality);
        }
      }
      try {
        const r = await db.transaction((tx) => tx.query<{ gateway_id: string; seq: number }>(moveFromUnnest, cols));
        return keysOf(r.rows);
      } catch (e) {
        throw classifyDbError(e);
      }
    },

    async writeEvents(batches) {
      const cols: unknown[][] = [[], [], [], [], [], [], [], []];
      for (const b of batches) {
        for (const e of b.events) {
          cols[0]!.push(b.gatewayId); cols[1]!.push(e.seq); cols[2]!.push(e.device); cols[3]!.push(e.type);
          cols[4]!.push(e.ts); cols[5]!.push(e.priority); cols[6]!.push(e.drill);
          cols[7]!.push(JSON.stringify(e.data ?? {}).replace(/\\u0000/g, ''));
        }
      }
      if (cols[0]!.length === 0) return new Set();
      const sql = `
with ins as (
  insert into events (gateway_id, seq, device_id, type, ts, priority, drill, data)
  select gateway_id, seq, device_id, type, to_timestamp(ts_ms / 1000.0), priority, drill, data::jsonb
    from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::bool[], $8::text[])
      as s(gateway_id, seq, device_id, type, ts_ms, priority, drill, data)
  on conflict (gateway_id, seq) do nothing
  returning gateway_id, seq, device_id, ts
),
seen as (
  insert into devices as d (gateway_id, device_id, org_path, last_seen)
  select i.gateway_id, i.device_id, min(g.org_path), max(i.ts) from ins i join gateways g on g.id = i.gateway_id
   group by 1, 2 order by 1, 2
  on conflict (gateway_id, device_id) do update set last_seen = greatest(d.last_seen, excluded.last_seen)
)
select gateway_id, seq from ins`;
      try {
        const r = await db.transaction((tx: Queryable) => tx.query<{ gateway_id: string; seq: number }>(sql, cols));
        return keysOf(r.rows);
      } catch (e) {
        throw classifyDbError(e);
      }
    },
  };
}

/**
 * TimescaleDB only: compression, retention and the continuous aggregates readings_1m / readings_1h
 * (same columns as the native rollup tables). Run outside a transaction; idempotent.
 */
export async function setupTimescale(db: Db, retentionDays: number, log: Logger): Promise<void> {
  const stmts = [
    `alter table readings set (timescaledb.compress, timescaledb.compress_segmentby = 'gateway_id, device_id, metric', timescaledb.compress_orderby = 'ts, seq')`,
    `select add_compression_policy('readings', interval '2 days', if_not_exists => true)`,
    `select add_retention_policy('readings', interval '${Math.max(1, Math.floor(retentionDays))} days', if_not_exists => true)`,
    `create materialized view if not exists readings_1m with (timescaledb.continuous) as
       select time_bucket('1 minute', ts) as bucket, gateway_id, device_id, metric,
              count(*) as n, sum(value) as sum, min(value) as min, max(value) as max
         from readings group by 1, 2, 3, 4 with no data`,
    `select add_continuous_aggregate_policy('readings_1m', start_offset => interval '1 hour', end_offset => interval '1 minute', schedule_interval => interval '1 minute', if_not_exists => true)`,
    `create materialized view if not exists readings_1h with (timescaledb.continuous) as
       select time_bucket('1 hour', ts) as bucket, gateway_id, device_id, metric,
              count(*) as n, sum(value) as sum, min(value) as min, max(value) as max
         from readings group by 1, 2, 3, 4 with no data`,
    `select add_continuous_aggregate_policy('readings_1h', start_offset => interval '1 day', end_offset => interval '1 hour', schedule_interval => interval '15 minutes', if_not_exists => true)`,
  ];
  for (const s of stmts) {
    try {
      await db.exec(s);
    } catch (e) {
      log.warn('TimescaleDB setup step failed; continuing', { step: s.slice(0, 60), error: (e as Error).message });
    }
  }
}
