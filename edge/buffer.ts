// The durable store-and-forward buffer: a SQLite file (WAL). Every reading and event gets its
// per-gateway `seq` inside the same transaction that writes it, so the uplink only ever sees
// records that are already on disk, and the counter (kept in `meta`) never goes backwards — not
// after SIGKILL (WAL), and with synchronous=FULL not after a power cut either.
//
// Records leave only when the broker acknowledged them (ack). Past `maxRecords` the oldest
// routine readings are dropped first; events and alarms are never dropped. Drops are counted
// durably and reported.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Clock, DeviceEvent, Reading } from '../contract/index.ts';

export type NewRecord =
  | { kind: 'reading'; device: string; metric: string; ts: number; value: number; quality: Reading['quality'] }
  | { kind: 'event'; device: string; type: string; ts: number; priority: 'alarm' | 'normal'; drill?: boolean; data?: Record<string, unknown> };

export interface BufferStats {
  depth: number;
  alarms: number;
  /** ms since the oldest buffered record was written, 0 when empty */
  oldestAgeMs: number;
  dropped: number;
  lastSeq: number;
  appended: number;
  acked: number;
}

export interface OutgoingBatch {
  readings: Reading[];
  events: DeviceEvent[];
  /** highest seq in this batch */
  lastSeq: number;
}

/** The store-and-forward seam; the SQLite implementation is the one the gateway uses. */
export interface RecordBuffer {
  /** `enforceCap: false` for the gateway's own drop reports, so reporting a drop never causes one */
  append(records: NewRecord[], opts?: { enforceCap?: boolean }): { firstSeq: number; lastSeq: number; dropped: number };
  /** pending alarm events with seq > after, oldest first */
  takeAlarms(after: number, limit: number): DeviceEvent[];
  /** pending non-alarm records with seq > after, oldest first, split by channel */
  takeRoutine(after: number, limit: number): OutgoingBatch | null;
  ack(seqs: number[]): void;
  stats(): BufferStats;
  close(): void;
}

export interface SqliteBufferOptions {
  file: string;
  maxRecords: number;
  synchronous?: 'full' | 'normal';
  clock: Clock;
}

interface Row {
  seq: number;
  kind: number;
  alarm: number;
  device: string;
  name: string;
  ts: number;
  value: number | null;
  quality: string | null;
  drill: number;
  data: string | null;
}

export function openSqliteBuffer(opts: SqliteBufferOptions): RecordBuffer {
  if (opts.file !== ':memory:') mkdirSync(dirname(opts.file), { recursive: true });
  const db = new Database(opts.file);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${(opts.synchronous ?? 'full').toUpperCase()}`);
  db.pragma('busy_timeout = 5000');
  db.exec(`
    CREATE TABLE IF NOT EXISTS records (
      seq INTEGER PRIMARY KEY,
      kind INTEGER NOT NULL,          -- 0 reading, 1 event
      alarm INTEGER NOT NULL,         -- 1: an alarm event, jumps the backlog
      device TEXT NOT NULL,
      name TEXT NOT NULL,             -- metric or event type
      ts INTEGER NOT NULL,
      value REAL,
      quality TEXT,
      drill INTEGER NOT NULL DEFAULT 0,
      data TEXT,
      buffered_at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS records_alarms ON records(seq) WHERE alarm = 1;
    CREATE INDEX IF NOT EXISTS records_routine ON records(seq) WHERE alarm = 0;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT OR IGNORE INTO meta(key, value) VALUES ('last_seq', 0), ('dropped', 0), ('appended', 0), ('acked', 0);
  `);

  const getMeta = db.prepare<[string], { value: number }>('SELECT value FROM meta WHERE key = ?');
  const setMeta = db.prepare('UPDATE meta SET value = ? WHERE key = ?');
  const addMeta = db.prepare('UPDATE meta SET value = value + ? WHERE key = ?');
  const maxSeq = (db.prepare('SELECT max(seq) AS m FROM records').get() as { m: number | null }).m ?? 0;
  let lastSeq = Math.max(getMeta.get('last_seq')!.value, maxSeq);
  let depth = (db.prepare('SELECT count(*) AS n FROM records').get() as { n: number }).n;
  let alarms = (db.prepare('SELECT count(*) AS n FROM records WHERE alarm = 1').get() as { n: number }).n;
  let dropped = getMeta.get('dropped')!.value;
  let appended = getMeta.get('appended')!.value;
  let acked = getMeta.get('acked')!.value;

  const insert = db.prepare(
    'INSERT INTO records(seq, kind, alarm, device, name, ts, value, quality, drill, data, buffered_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)',
  );
  const dropOldestReadings = db.prepare(
    'DELETE FROM records WHERE seq IN (SELECT seq FROM records WHERE kind = 0 ORDER BY seq LIMIT ?)',
  );
  const selAlarms = db.prepare<[number, number], Row>('SELECT * FROM records WHERE alarm = 1 AND seq > ? ORDER BY seq LIMIT ?');
  const selRoutine = db.prepare<[number, number], Row>('SELECT * FROM records WHERE alarm = 0 AND seq > ? ORDER BY seq LIMIT ?');
  const del = db.prepare<[number], { alarm: number }>('DELETE FROM records WHERE seq = ? RETURNING alarm');
  const oldest = db.prepare<[], { b: number }>('SELECT buffered_at AS b FROM records ORDER BY seq LIMIT 1');

  const appendTx = db.transaction((records: NewRecord[], enforceCap: boolean) => {
    const now = opts.clock.now();
    const firstSeq = lastSeq + 1;
    let seq = lastSeq;
    let newAlarms = 0;
    for (const r of records) {
      seq++;
      if (r.kind === 'reading') {
        insert.run(seq, 0, 0, r.device, r.metric, r.ts, r.value, r.quality, 0, null, now);
      } else {
        const alarm = r.priority === 'alarm' ? 1 : 0;
        newAlarms += alarm;
        insert.run(seq, 1, alarm, r.device, r.type, r.ts, null, null, r.drill ? 1 : 0, JSON.stringify(r.data ?? {}), now);
      }
    }
    setMeta.run(seq, 'last_seq');
    addMeta.run(records.length, 'appended');
    let droppedNow = 0;
    const over = depth + records.length - opts.maxRecords;
    if (over > 0 && enforceCap) {
      droppedNow = dropOldestReadings.run(over).changes;
      if (droppedNow > 0) addMeta.run(droppedNow, 'dropped');
    }
    return { firstSeq, lastSeq: seq, droppedNow, newAlarms };
  });

  const ackTx = db.transaction((seqs: number[]) => {
    let n = 0;
    let a = 0;
    for (const s of seqs) {
      const r = del.get(s);
      if (r) {
        n++;
        a += r.alarm;
      }
    }
    if (n) addMeta.run(n, 'acked');
    return { n, a };
  });

  const toRecord = (r: Row): Reading | DeviceEvent =>
    r.kind === 0
      ? { seq: r.seq, device: r.device, metric: r.name, ts: r.ts, value: r.value!, quality: (r.quality ?? 'good') as Reading['quality'] }
      : {
          seq: r.seq,
          device: r.device,
          type: r.name,
          ts: r.ts,
          priority: r.alarm ? 'alarm' : 'normal',
          drill: r.drill === 1,
          data: r.data ? (JSON.parse(r.data) as Record<string, unknown>) : {},
        };

  return {
    append(records, o = {}) {
      if (records.length === 0) return { firstSeq: lastSeq + 1, lastSeq, dropped: 0 };
      const r = appendTx(records, o.enforceCap !== false);
      lastSeq = r.lastSeq;
      depth += records.length - r.droppedNow;
      alarms += r.newAlarms;
      dropped += r.droppedNow;
      appended += records.length;
      return { firstSeq: r.firstSeq, lastSeq: r.lastSeq, dropped: r.droppedNow };
    },
    takeAlarms(after, limit) {
      return selAlarms.all(after, limit).map(toRecord) as DeviceEvent[];
    },
    takeRoutine(after, limit) {
      const rows = selRoutine.all(after, limit);
      if (rows.length === 0) return null;
      const readings: Reading[] = [];
      const events: DeviceEvent[] = [];
      for (const row of rows) {
        const rec = toRecord(row);
        if (row.kind === 0) readings.push(rec as Reading);
        else events.push(rec as DeviceEvent);
      }
      return { readings, events, lastSeq: rows[rows.length - 1]!.seq };
    },
    ack(seqs) {
      if (seqs.length === 0) return;
      const r = ackTx(seqs);
      depth -= r.n;
      alarms -= r.a;
      acked += r.n;
    },
    stats() {
      const o = depth > 0 ? oldest.get() : undefined;
      return {
        depth,
        alarms,
        oldestAgeMs: o ? Math.max(0, opts.clock.now() - o.b) : 0,
        dropped,
        lastSeq,
        appended,
        acked,
      };
    },
    close() {
      db.close();
    },
  };
}
