// The PostgreSQL sink: writes reading and event batches exactly once per (gateway, seq) and tells
// which records were new (listeners such as the rules get only those).
//
// Dedup (docs/delivery.md, "Exactly once"; migration 070): a reading is new iff its seq is at or
// above its gateway's floor and (gateway, seq) is not in record_seqs, an unpartitioned table whose
// key is exactly (gateway_id, seq) — never the timestamp. The transaction that stores the rows
// raises the floor and inserts the keys; SeqPruner forgets keys below the floor afterwards.
// PostgreSQL: the rows of many messages are streamed with COPY (pg-copy-streams), in chunks that
// honour the stream's backpressure, straight into readings and their keys into record_seqs when
// none lies below its floor; a key stored before makes that fail, and the batch goes through a
// temporary staging table: its keys go into record_seqs (`on conflict do nothing returning` says
// which are new), then the new rows into readings. Either way the latest values, the devices'
// last-seen times and the marks of the (gateway, minute) buckets touched, aggregated here over the
// new rows, follow in one statement. One transaction: a crash before commit leaves nothing, so the
// unacknowledged messages are redelivered.
// PGlite: the same statements read the rows from unnest() over array parameters (a multi-row insert).
// Rollups (native PostgreSQL / PGlite) are recomputed from the raw rows of the marked buckets by
// refreshRollups(), off the ingest path; on TimescaleDB continuous aggregates do it.

import { from as copyFrom } from 'pg-copy-streams';
import type pg from 'pg';
import type { DeviceEvent, Logger, Reading } from '../../contract/index.ts';
import type { Db, Queryable } from '../db.ts';

export interface ReadingRows {
  gatewayId: string;
  /** the batch's `floor` (contract/messages.ts): every seq below it is in custody already */
  floor?: number;
  /**
   * an operator's replay of a dead letter (`xiaoan deadletters replay`): the gateway's floor has
   * passed it (the centre receipted the dead letter), so only the stored keys decide
   */
  replay?: boolean;
  readings: Reading[];
}
export interface EventRows {
  gatewayId: string;
  /** the batch's `floor`; events honour it but do not raise the stored floor (see writeEvents) */
  floor?: number;
  /** an operator's replay of a dead letter: the floor does not apply (see ReadingRows.replay) */
  replay?: boolean;
  events: DeviceEvent[];
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

// The statements that move staged rows into readings. `src` (a from-item named s) yields
// (gateway_id, seq, device_id, metric, ts_ms, value, quality, ord), `ord` the row's place in the
// write. A row is new iff its seq is at or above its gateway's floor (raised by FLOORS_SQL just
// before, in the same transaction) and its key goes into record_seqs now (docs/delivery.md,
// "Exactly once": the key is (gateway, seq), never ts).
const ORIGIN = "timestamptz '2000-01-01 00:00:00+00'";

interface MoveSql {
  /** inserts the keys at or above the floor not stored yet; returns them */
  keys: string;
  /** every staged row (when every key was new: no duplicate, none twice in the write) */
  all: string;
  /** the rows of the new keys given as two arrays after src's parameters; of two rows with one key, the first */
  some: string;
}

function moveReadingsSql(src: string, srcParams: number, o: { floor: boolean } = { floor: true }): MoveSql {
  const cols = 'gateway_id, seq, device_id, metric, ts, value, quality';
  const row = 's.gateway_id, s.seq, s.device_id, s.metric, to_timestamp(s.ts_ms / 1000.0), s.value, s.quality';
  return {
    keys: o.floor
      ? `insert into record_seqs (gateway_id, seq)
      select s.gateway_id, s.seq from ${src} join gateway_floor f on f.gateway_id = s.gateway_id where s.seq >= f.floor
      on conflict do nothing returning gateway_id, seq`
      : `insert into record_seqs (gateway_id, seq) select s.gateway_id, s.seq from ${src} on conflict do nothing returning gateway_id, seq`,
    all: `insert into readings (${cols}) select ${row} from ${src}`,
    some: `insert into readings (${cols})
      select distinct on (s.gateway_id, s.seq) ${row}
        from ${src} join unnest($${srcParams + 1}::text[], $${srcParams + 2}::bigint[]) as k(g, q) on k.g = s.gateway_id and k.q = s.seq
       order by s.gateway_id, s.seq, s.ord`,
  };
}

/**
 * The latest values, the devices' last-seen times and (native rollups) the touched
 * (gateway, minute) buckets of the new rows, aggregated in memory by aggregateParams().
 */
function aggregatesSql(timescale: boolean): string {
  return `
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
)${timescale ? '' : `,
dirty as (
  insert into rollup_dirty as m (gateway_id, bucket)
  select g, to_timestamp(b / 1000.0) from unnest($10::text[], $11::float8[]) as u(g, b) order by 1, 2
  on conflict (gateway_id, bucket) do update set marked_at = now()
)`}
select 1`;
}

/** Parameters of aggregatesSql(): the new rows only (`fresh`), the first row of each key. */
function aggregateParams(batches: ReadingRows[], fresh: NewKeys, timescale: boolean): unknown[] {
  const latest = new Map<string, { g: string; d: string; m: string; ts: number; v: number; q: string }>();
  const seen = new Map<string, { g: string; d: string; ts: number }>();
  const dirty = new Map<string, { g: string; b: number }>();
  const taken = new Set<string>();
  for (const bt of batches) {
    const g = bt.gatewayId;
    for (const r of bt.readings) {
      const key = recordKey(g, r.seq);
      if (!fresh.has(key) || taken.has(key)) continue;
      taken.add(key);
      const series = `${g}\u0000${r.device}\u0000${r.metric}`;
      const l = latest.get(series);
      if (!l || r.ts >= l.ts) latest.set(series, { g, d: r.device, m: r.metric, ts: r.ts, v: r.value, q: r.quality });
      const dk = `${g}\u0000${r.device}`;
      const sn = seen.get(dk);
      if (!sn || r.ts > sn.ts) seen.set(dk, { g, d: r.device, ts: r.ts });
      if (!timescale) {
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
  return [...lc, ...sc, ...(timescale ? [] : dc)];
}

/**
 * Raise each gateway's floor to the highest `floor` of its batches in this write, lock its
 * gateway_floor row until commit (a batch without floor raises nothing but still locks, creating
 * the row at 0) and return the floors: concurrent writes of one gateway then see each other's
 * floor and keys, and pruneSeqs() skips a gateway being written. Rows in gateway order, so two
 * writes never deadlock.
 */
const FLOORS_SQL = `
insert into gateway_floor as gf (gateway_id, floor)
select g, coalesce(max(f), 0) from unnest($1::text[], $2::bigint[]) as u(g, f) group by g order by g
on conflict (gateway_id) do update set floor = greatest(gf.floor, excluded.floor)
returning gateway_id, floor`;

/** Whether no row lies below its gateway's floor and no key comes twice (then the direct COPY may do). */
function allNewLooking(batches: ReadingRows[], floors: Array<{ gateway_id: string; floor: number }>): boolean {
  const floorOf = new Map(floors.map((f) => [f.gateway_id, Number(f.floor)]));
  const seen = new Set<string>();
  for (const b of batches) {
    const floor = floorOf.get(b.gatewayId) ?? 0;
    for (const r of b.readings) {
      const k = recordKey(b.gatewayId, r.seq);
      if (r.seq < floor || seen.has(k)) return false;
      seen.add(k);
    }
  }
  return true;
}

function floorParams(batches: Array<{ gatewayId: string; floor?: number }>): unknown[] {
  return [batches.map((b) => b.gatewayId), batches.map((b) => b.floor ?? null)];
}

const UNNEST_READINGS = `unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[])
  with ordinality as s(gateway_id, seq, device_id, metric, ts_ms, value, quality, ord)`;

export interface PruneResult {
  /** keys forgotten */
  deleted: number;
  /** the budget ran out before every gateway was pruned to its floor */
  more: boolean;
}

export interface PostgresSink {
  /** Stores the readings not stored before (docs/delivery.md, "Exactly once"); returns their keys. */
  writeReadings(batches: ReadingRows[]): Promise<NewKeys>;
  writeEvents(batches: EventRows[]): Promise<NewKeys>;
  partitions: PartitionKeeper;
  /** rows streamed per COPY chunk (bytes); the stream's own backpressure governs beyond that */
  readonly copyChunkBytes: number;
  /** fallbacks: writes that met a duplicate (or a seq below the floor) and went the staging way */
  stats(): { fallbacks: number; rollupRefreshes: number; prunes: number; pruned: number };
  /**
   * Recompute the marked (gateway, minute) buckets of readings_1m from the raw rows and their hours
   * of readings_1h. Only buckets that closed `settleMs` ago (default 5 s) unless `all`. Returns the
   * number of buckets done. No-op on TimescaleDB (its continuous aggregates do it).
   */
  refreshRollups(opts?: { settleMs?: number; all?: boolean }): Promise<number>;
  /**
   * Forget the keys in record_seqs below each gateway's floor, at most `budget` seqs' worth
   * (default 100,000), in one short transaction. writeReadings calls it itself after a commit at
   * most every `pruneEveryMs` (sooner while `more`); store.maintain() calls it too.
   */
  pruneSeqs(opts?: { budget?: number }): Promise<PruneResult>;
}

export interface SinkOptions extends StorageOptions {
  copyChunkBytes?: number;
  /** least time between two prunes run after a write (default 5 s); 0 prunes after every write */
  pruneEveryMs?: number;
}

export function createPostgresSink(db: Db, opts: SinkOptions): PostgresSink {
  const partitions = new PartitionKeeper(db, opts);
  const copyChunkBytes = opts.copyChunkBytes ?? 256 * 1024;
  const moveFromStaging = moveReadingsSql('readings_in s', 0);
  const moveFromUnnest = moveReadingsSql(UNNEST_READINGS, 7);
  const moveReplayed = moveReadingsSql(UNNEST_READINGS, 7, { floor: false });
  const aggregates = aggregatesSql(opts.timescale);
  const stagedClients = new WeakSet<pg.PoolClient>();
  const clock = opts.now;
  const pruner = new SeqPruner(db, { everyMs: opts.pruneEveryMs ?? 5_000, now: clock, log: opts.log });
  let rollupRefreshes = 0;
  let stagingUntil = 0;
  let fallbacks = 0;

  /**
   * Streams one line per reading into a COPY (text format), in chunks that honour the stream's
   * backpressure. Ids, metric names and qualities are checked by the contract schemas (no tab,
   * newline or backslash can occur), so the text format needs no escaping.
   */
  async function copyLines(client: pg.PoolClient, sql: string, batches: ReadingRows[], line: (g: string, r: Reading, ord: number) => string): Promise<void> {
    const stream = client.query(copyFrom(sql));
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
    let ord = 0;
    for (const b of batches) {
      for (const r of b.readings) {
        chunk += line(b.gatewayId, r, ++ord);
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

  /** Keys, then rows (all of them, or those of the new keys), then their aggregates; returns the new keys. */
  async function moveRows(tx: Pick<Queryable, 'query'>, sql: MoveSql, params: unknown[], rows: number, batches: ReadingRows[]): Promise<NewKeys> {
    const keyRows = (await tx.query<{ gateway_id: string; seq: number }>(sql.keys, params)).rows;
    if (keyRows.length === 0) return new Set();
    const fresh = keysOf(keyRows);
    if (keyRows.length === rows) await tx.query(sql.all, params);
    else await tx.query(sql.some, [...params, keyRows.map((k) => k.gateway_id), keyRows.map((k) => k.seq)]);
    await tx.query(aggregates, aggregateParams(batches, fresh, opts.timescale));
    return fresh;
  }

  function allKeys(batches: ReadingRows[]): NewKeys {
    const out: NewKeys = new Set();
    for (const b of batches) for (const r of b.readings) out.add(recordKey(b.gatewayId, r.seq));
    return out;
  }

  function keysOf(rows: { gateway_id: string; seq: number }[]): NewKeys {
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

  /**
   * PostgreSQL. Direct: when every row is at or above its gateway's floor and no key comes twice,
   * the rows are COPYed straight into readings and their keys into record_seqs (as fast as the
   * tables take them). A key stored before makes the second COPY fail (23505): back to the
   * savepoint, and the batch goes the staging way, which skips what is stored: COPY into a
   * temporary table, then the keys (`on conflict do nothing returning`) and the new rows. After a
   * duplicate the staging way is used for 30 s, since redeliveries come in runs (after a restart).
   * Then the aggregates of the new rows. One transaction: a crash before commit leaves nothing.
   */
  async function writeByCopy(pool: pg.Pool, batches: ReadingRows[]): Promise<NewKeys> {
    return inTransaction(pool, async (client) => {
      const tx = {
        query: async <R>(sql: string, params?: unknown[]) => {
          const r = await client.query(sql, params);
          return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
        },
      };
      const floors = await tx.query<{ gateway_id: string; floor: number }>(FLOORS_SQL, floorParams(batches));
      if (clock() >= stagingUntil) {
        if (allNewLooking(batches, floors.rows) && (await copyDirect(client))) {
          const fresh = allKeys(batches);
          await tx.query(aggregates, aggregateParams(batches, fresh, opts.timescale));
          return fresh;
        }
        stagingUntil = clock() + 30_000;
        fallbacks++;
      }
      if (!stagedClients.has(client)) {
        await client.query(`create temp table if not exists readings_in (
          gateway_id text, seq bigint, device_id text, metric text, ts_ms double precision,
          value double precision, quality text, ord integer) on commit delete rows`);
        stagedClients.add(client);
      }
      await copyLines(client, 'copy readings_in (gateway_id, seq, device_id, metric, ts_ms, value, quality, ord) from stdin', batches,
        (g, r, ord) => `${g}\t${r.seq}\t${r.device}\t${r.metric}\t${r.ts}\t${r.value}\t${r.quality}\t${ord}\n`);
      return moveRows(tx, moveFromStaging, [], batches.reduce((n, b) => n + b.readings.length, 0), batches);
    });

    /** false when a key was stored before (the savepoint undid the rows) */
    async function copyDirect(client: pg.PoolClient): Promise<boolean> {
      await client.query('savepoint direct');
      try {
        await copyLines(client, 'copy readings (gateway_id, seq, device_id, metric, ts, value, quality) from stdin', batches,
          (g, r) => `${g}\t${r.seq}\t${r.device}\t${r.metric}\t${new Date(r.ts).toISOString()}\t${r.value}\t${r.quality}\n`);
        await copyLines(client, 'copy record_seqs (gateway_id, seq) from stdin', batches, (g, r) => `${g}\t${r.seq}\n`);
        await client.query('release savepoint direct');
        return true;
      } catch (e) {
        if ((e as { code?: string }).code !== '23505') throw e;
        await client.query('rollback to savepoint direct');
        return false;
      }
    }
  }

  /** PGlite: the same statement reads the rows from unnest() over array parameters (a multi-row insert). */
  async function writeByUnnest(batches: ReadingRows[], o: { replay?: boolean } = {}): Promise<NewKeys> {
    const cols: unknown[][] = [[], [], [], [], [], [], []];
    for (const b of batches) {
      for (const r of b.readings) {
        cols[0]!.push(b.gatewayId); cols[1]!.push(r.seq); cols[2]!.push(r.device); cols[3]!.push(r.metric);
        cols[4]!.push(r.ts); cols[5]!.push(r.value); cols[6]!.push(r.quality);
      }
    }
    try {
      return await db.transaction(async (tx) => {
        if (o.replay) return moveRows(tx, moveReplayed, cols, cols[0]!.length, batches);
        await tx.query(FLOORS_SQL, floorParams(batches));
        return moveRows(tx, moveFromUnnest, cols, cols[0]!.length, batches);
      });
    } catch (e) {
      throw classifyDbError(e);
    }
  }

  return {
    partitions,
    copyChunkBytes,
    stats: () => ({ fallbacks, rollupRefreshes, ...pruner.stats() }),
    pruneSeqs: (o) => pruner.prune(o?.budget),
    async refreshRollups(o = {}) {
      if (opts.timescale) return 0;
      const cutoff = o.all ? 4_102_444_800_000 : clock() - (o.settleMs ?? 5_000) - 60_000;
      try {
        const n = await refreshRollupsOnce(db, cutoff);
        if (n > 0) rollupRefreshes++;
        return n;
      } catch (e) {
        throw classifyDbError(e);
      }
    },
    async writeReadings(batches) {
      if (batches.every((b) => b.readings.length === 0)) return new Set();
      await ensurePartitions(batches);
      // replays are few and rare: the multi-row path without the floor, on either engine
      const replay = batches.some((b) => b.replay);
      if (replay && !batches.every((b) => b.replay)) throw Object.assign(new Error('writeReadings: replayed and live batches go in separate writes'), { retryable: false });
      const keys = replay ? await writeByUnnest(batches, { replay }) : db.engine === 'postgres' && db.pool ? await writeByCopy(db.pool, batches) : await writeByUnnest(batches);
      await pruner.afterWrite();
      return keys;
    },
    writeEvents: (batches) => writeEventRows(db, batches),
  };
}

/** Recompute the marked rollup buckets closed before `cutoff` (ms); returns how many were done. */
async function refreshRollupsOnce(db: Db, cutoff: number): Promise<number> {
  return db.transaction(async (tx) => {
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
    return marks.rows.length;
  });
}

/**
 * Events: the unpartitioned events table's primary key is exactly (gateway_id, seq), so it is the
 * dedup key; a seq below the gateway's floor (stored, or this batch's) is a duplicate as well.
 * The alarm path neither raises nor locks the stored floor, so an alarm never waits behind a bulk
 * readings commit of its gateway; readings batches carry the same floor and raise it.
 */
async function writeEventRows(db: Db, batches: EventRows[]): Promise<NewKeys> {
  const cols: unknown[][] = [[], [], [], [], [], [], [], [], []];
  for (const b of batches) {
    for (const e of b.events) {
      cols[0]!.push(b.gatewayId); cols[1]!.push(e.seq); cols[2]!.push(e.device); cols[3]!.push(e.type);
      cols[4]!.push(e.ts); cols[5]!.push(e.priority); cols[6]!.push(e.drill);
      cols[7]!.push(JSON.stringify(e.data ?? {}).replace(/\\u0000/g, ''));
      cols[8]!.push(b.floor ?? null);
    }
  }
  if (cols[0]!.length === 0) return new Set();
  const sql = `
with ins as (
  insert into events (gateway_id, seq, device_id, type, ts, priority, drill, data)
  select s.gateway_id, s.seq, s.device_id, s.type, to_timestamp(s.ts_ms / 1000.0), s.priority, s.drill, s.data::jsonb
    from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::bool[], $8::text[], $9::bigint[])
      as s(gateway_id, seq, device_id, type, ts_ms, priority, drill, data, batch_floor)
    left join gateway_floor f on f.gateway_id = s.gateway_id
   where s.seq >= greatest(f.floor, s.batch_floor, 0) or $10::bool
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
    const replay = batches.length > 0 && batches.every((b) => b.replay);
    const r = await db.transaction((tx: Queryable) => tx.query<{ gateway_id: string; seq: number }>(sql, [...cols, replay]));
    const out: NewKeys = new Set();
    for (const row of r.rows) out.add(recordKey(row.gateway_id, Number(row.seq)));
    return out;
  } catch (e) {
    throw classifyDbError(e);
  }
}

/**
 * Forgets record_seqs keys below each gateway's floor, off the commit path: at most every
 * `everyMs` after a write (right after the next write while a budget ran out), in its own short
 * transaction. Gateways being written (their floor row locked) are skipped this time. A failed
 * prune is logged and tried again later: keys below the floor are never consulted, so keeping
 * them longer costs space only.
 */
export class SeqPruner {
  private nextAt = 0;
  private running = false;
  private counts = { prunes: 0, pruned: 0 };
  constructor(private db: Db, private opts: { everyMs: number; now: () => number; log: Logger }) {}

  stats(): { prunes: number; pruned: number } {
    return { ...this.counts };
  }

  async afterWrite(): Promise<void> {
    if (this.running || this.opts.now() < this.nextAt) return;
    try {
      const r = await this.prune();
      this.nextAt = r.more ? 0 : this.opts.now() + this.opts.everyMs;
    } catch (e) {
      this.nextAt = this.opts.now() + this.opts.everyMs;
      this.opts.log.warn('pruning record_seqs failed; tried again later', { error: (e as Error).message });
    }
  }

  async prune(budget = 100_000): Promise<PruneResult> {
    this.running = true;
    try {
      const r = await this.db.transaction(async (tx) => {
        // the gateways furthest behind first; lo skips to the lowest key actually stored
        const due = await tx.query<{ gateway_id: string; lo: number; floor: number }>(
          `select f.gateway_id, f.floor,
                  greatest(f.pruned_to, coalesce((select min(r.seq) from record_seqs r
                    where r.gateway_id = f.gateway_id and r.seq >= f.pruned_to), f.floor)) as lo
             from gateway_floor f where f.pruned_to < f.floor
            order by f.floor - f.pruned_to desc limit 1000 for update of f skip locked`,
        );
        const g: string[] = [], lo: number[] = [], hi: number[] = [];
        let left = budget;
        for (const d of due.rows) {
          const to = Math.min(Number(d.floor), Number(d.lo) + Math.max(0, left));
          g.push(d.gateway_id); lo.push(Number(d.lo)); hi.push(to);
          left -= Math.max(0, to - Number(d.lo));
        }
        if (g.length === 0) return { deleted: 0, more: false };
        const del = await tx.query<{ n: number }>(
          `with c as (select * from unnest($1::text[], $2::bigint[], $3::bigint[]) as c(g, lo, hi)),
           gone as (delete from record_seqs r using c where r.gateway_id = c.g and r.seq >= c.lo and r.seq < c.hi returning 1),
           moved as (update gateway_floor f set pruned_to = c.hi from c where f.gateway_id = c.g)
           select count(*)::int as n from gone`,
          [g, lo, hi],
        );
        return { deleted: del.rows[0]?.n ?? 0, more: left <= 0 || due.rows.length === 1000 };
      });
      this.counts.prunes++;
      this.counts.pruned += r.deleted;
      return r;
    } catch (e) {
      throw classifyDbError(e);
    } finally {
      this.running = false;
    }
  }
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
    `create materialized view if not exists readings_1m with (timescaledb.continuous, timescaledb.materialized_only = false) as
       select time_bucket('1 minute', ts) as bucket, gateway_id, device_id, metric,
              count(*) as n, sum(value) as sum, min(value) as min, max(value) as max
         from readings group by 1, 2, 3, 4 with no data`,
    `select add_continuous_aggregate_policy('readings_1m', start_offset => interval '1 hour', end_offset => interval '1 minute', schedule_interval => interval '1 minute', if_not_exists => true)`,
    `create materialized view if not exists readings_1h with (timescaledb.continuous, timescaledb.materialized_only = false) as
       select time_bucket('1 hour', ts) as bucket, gateway_id, device_id, metric,
              count(*) as n, sum(value) as sum, min(value) as min, max(value) as max
         from readings group by 1, 2, 3, 4 with no data`,
    `select add_continuous_aggregate_policy('readings_1h', start_offset => interval '1 day', end_offset => interval '1 hour', schedule_interval => interval '15 minutes', if_not_exists => true)`,
    // Real-time aggregation: a query reads the materialized buckets plus the raw rows past the
    // last refresh, so rollups answer what was stored a moment ago (TimescaleDB 2.13+ defaults to
    // materialized only). Set again for views made before the option was given at creation.
    `alter materialized view readings_1m set (timescaledb.materialized_only = false)`,
    `alter materialized view readings_1h set (timescaledb.materialized_only = false)`,
  ];
  for (const s of stmts) {
    try {
      await db.exec(s);
    } catch (e) {
      log.warn('TimescaleDB setup step failed; continuing', { step: s.slice(0, 60), error: (e as Error).message });
    }
  }
}
