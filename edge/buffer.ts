// The durable store-and-forward buffer: a SQLite file (WAL). Every reading and event gets its
// per-gateway `seq` inside the same transaction that writes it, so the uplink only ever sees
// records that are already on disk.
//
// The seq counter never goes backwards:
//  - after SIGKILL: a committed WAL transaction survives the process (synchronous NORMAL or FULL);
//  - after a power cut: with synchronous=NORMAL the last transactions may be lost, and with them
//    seqs the uplink may already have sent — reusing one would make ingest drop a new record as a
//    duplicate. So seqs are reserved in blocks (`seq_reserved`), each reservation committed with
//    a full fsync, and after any unclean stop numbering resumes above the reservation (a gap of
//    at most SEQ_BLOCK, never a reuse). A clean close() records `clean = 1` and resumes exactly.
//
// Records leave only when the centre's receipt names their seq (confirm; docs/delivery.md): a
// broker's PUBACK is transport, not custody. Past `maxRecords` the oldest routine readings are
// dropped first; events and alarms are never dropped. Drops are counted durably and reported.
// A record that fails the contract never gets a seq: it is set aside alone in `quarantine`.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { privateFile } from './at-rest.ts';
import { dirname } from 'node:path';
import type { Clock, DeviceEvent, Reading } from '../contract/index.ts';

export type NewRecord =
  | { kind: 'reading'; device: string; metric: string; ts: number; value: number; quality: Reading['quality'] }
  | { kind: 'event'; device: string; type: string; ts: number; priority: 'alarm' | 'normal'; drill?: boolean; data?: Record<string, unknown> };

/** alarms; routine readings; routine (non-alarm) events — the three kinds of batch the uplink sends */
export type Lane = 'alarm' | 'reading' | 'event';

/** seqs reserved per fsynced reservation */
export const SEQ_BLOCK = 10_000;

export interface BufferStats {
  depth: number;
  alarms: number;
  /** ms since the oldest buffered record was written, 0 when empty */
  oldestAgeMs: number;
  dropped: number;
  lastSeq: number;
  appended: number;
  /** records removed because a receipt named them */
  acked: number;
  /** records set aside as invalid (never sent) */
  quarantined: number;
}

/** A record that failed the contract where it was made, kept for a technician to look at. */
export interface QuarantineEntry {
  device: string;
  reason: string;
  /** the record as made (JSON, no secrets), clipped */
  raw: string;
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
  /** the records with these seqs still buffered, ascending (to publish a batch again) */
  read(seqs: number[]): Array<Reading | DeviceEvent>;
  /** a receipt named these inclusive seq ranges: delete those present (any lane); returns how many */
  confirm(ranges: ReadonlyArray<readonly [number, number]>): number;
  /** the lowest seq still buffered (lastSeq + 1 when empty): a batch's `floor` */
  floor(): number;
  /** set an invalid record aside (it gets no seq) */
  quarantine(entries: QuarantineEntry[]): void;
  /** the newest quarantined records, newest first */
  quarantined(limit: number): Array<QuarantineEntry & { at: number }>;
  stats(): BufferStats;
  close(): void;
}

export interface SqliteBufferOptions {
  file: string;
  maxRecords: number;
  synchronous?: 'full' | 'normal';
  clock: Clock;
}

/** seq, kind, alarm, device, name, ts, value, quality, drill, data */
type RawRow = [number, number, number, string, string, number, number | null, string | null, number, string | null];

export function openSqliteBuffer(opts: SqliteBufferOptions): RecordBuffer {
  if (opts.file !== ':memory:') {
    mkdirSync(dirname(opts.file), { recursive: true });
    privateFile(opts.file); // 0600 before SQLite opens it (docs/security.md, "Secrets at rest")
  }
  const db = new Database(opts.file);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${(opts.synchronous ?? 'normal').toUpperCase()}`);
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
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT OR IGNORE INTO meta(key, value) VALUES ('last_seq', 0), ('dropped', 0), ('appended', 0), ('acked', 0), ('seq_reserved', 0), ('clean', 1), ('quarantined', 0);
    CREATE TABLE IF NOT EXISTS quarantine (
      id INTEGER PRIMARY KEY,
      at INTEGER NOT NULL,
      device TEXT NOT NULL,
      reason TEXT NOT NULL,
      raw TEXT NOT NULL
    );
  `);

  const getMeta = db.prepare<[string], { value: number }>('SELECT value FROM meta WHERE key = ?');
  const setMeta = db.prepare('UPDATE meta SET value = ? WHERE key = ?');
  const addMeta = db.prepare('UPDATE meta SET value = value + ? WHERE key = ?');
  const maxSeq = (db.prepare('SELECT max(seq) AS m FROM records').get() as { m: number | null }).m ?? 0;
  const wasClean = getMeta.get('clean')!.value === 1;
  let reserved = getMeta.get('seq_reserved')!.value;
  let lastSeq = Math.max(getMeta.get('last_seq')!.value, maxSeq, wasClean ? 0 : reserved);
  const sync = (opts.synchronous ?? 'normal').toUpperCase();
  /** one transaction with a full fsync (reservations, the clean flag) */
  const durably = <T>(fn: () => T): T => {
    if (sync !== 'FULL') db.pragma('synchronous = FULL');
    try {
      return db.transaction(fn)();
    } finally {
      if (sync !== 'FULL') db.pragma(`synchronous = ${sync}`);
    }
  };
  let depth = (db.prepare('SELECT count(*) AS n FROM records').get() as { n: number }).n;
  let alarms = (db.prepare('SELECT count(*) AS n FROM records WHERE alarm = 1').get() as { n: number }).n;
  let dropped = getMeta.get('dropped')!.value;
  let appended = getMeta.get('appended')!.value;
  let acked = getMeta.get('acked')!.value;
  let quarantinedCount = getMeta.get('quarantined')!.value;

  const insert = db.prepare(
    'INSERT INTO records(seq, kind, alarm, device, name, ts, value, quality, drill, data, buffered_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)',
  );
  const dropOldestReadings = db.prepare(
    'DELETE FROM records WHERE seq IN (SELECT seq FROM records WHERE kind = 0 ORDER BY seq LIMIT ?)',
  );
  // raw rows (arrays) are ~3x faster to read than objects; the rowid scan beats a partial index
  const COLS = 'seq, kind, alarm, device, name, ts, value, quality, drill, data';
  const selAlarms = db.prepare<[number, number], RawRow>(`SELECT ${COLS} FROM records WHERE alarm = 1 AND seq > ? ORDER BY seq LIMIT ?`).raw(true);
  const selRoutine = db.prepare<[number, number], RawRow>(`SELECT ${COLS} FROM records NOT INDEXED WHERE seq > ? AND alarm = 0 ORDER BY seq LIMIT ?`).raw(true);
  const selOne = db.prepare<[number], RawRow>(`SELECT ${COLS} FROM records WHERE seq = ?`).raw(true);
  const countAlarms = db.prepare<[number, number], { n: number }>('SELECT count(*) AS n FROM records WHERE alarm = 1 AND seq BETWEEN ? AND ?');
  const delRange = db.prepare('DELETE FROM records WHERE seq BETWEEN ? AND ?');
  const minSeq = db.prepare<[], { m: number | null }>('SELECT min(seq) AS m FROM records');
  const insQuarantine = db.prepare('INSERT INTO quarantine(at, device, reason, raw) VALUES (?,?,?,?)');
  const selQuarantine = db.prepare<[number], QuarantineEntry & { at: number }>('SELECT at, device, reason, raw FROM quarantine ORDER BY id DESC LIMIT ?');
  const oldest = db.prepare<[], { b: number }>('SELECT buffered_at AS b FROM records ORDER BY seq LIMIT 1');

  // from now on a stop is unclean until close() says otherwise
  durably(() => setMeta.run(0, 'clean'));

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
    if (seq > reserved) setMeta.run(seq + SEQ_BLOCK, 'seq_reserved');
    addMeta.run(records.length, 'appended');
    let droppedNow = 0;
    const over = depth + records.length - opts.maxRecords;
    if (over > 0 && enforceCap) {
      droppedNow = dropOldestReadings.run(over).changes;
      if (droppedNow > 0) addMeta.run(droppedNow, 'dropped');
    }
    return { firstSeq, lastSeq: seq, droppedNow, newAlarms };
  });

  const confirmTx = db.transaction((ranges: ReadonlyArray<readonly [number, number]>) => {
    let n = 0;
    let a = 0;
    for (const [from, to] of ranges) {
      a += countAlarms.get(from, to)!.n;
      n += delRange.run(from, to).changes;
    }
    if (n) addMeta.run(n, 'acked');
    return { n, a };
  });
  const quarantineTx = db.transaction((entries: QuarantineEntry[]) => {
    const now = opts.clock.now();
    for (const e of entries) insQuarantine.run(now, e.device, e.reason, e.raw);
    addMeta.run(entries.length, 'quarantined');
  });

  const toRecord = ([seq, kind, alarm, device, name, ts, value, quality, drill, data]: RawRow): Reading | DeviceEvent =>
    kind === 0
      ? { seq, device, metric: name, ts, value: value!, quality: (quality ?? 'good') as Reading['quality'] }
      : {
          seq,
          device,
          type: name,
          ts,
          priority: alarm ? 'alarm' : 'normal',
          drill: drill === 1,
          data: data ? (JSON.parse(data) as Record<string, unknown>) : {},
        };

  // A receipt lost in a power cut only means a record is sent again (ingest deduplicates), so
  // confirmations commit without fsync; the next FULL commit syncs them anyway.
  const fullSync = (opts.synchronous ?? 'normal') === 'full';

  return {
    append(records, o = {}) {
      if (records.length === 0) return { firstSeq: lastSeq + 1, lastSeq, dropped: 0 };
      const needsReservation = lastSeq + records.length > reserved;
      const r = needsReservation ? durably(() => appendTx(records, o.enforceCap !== false)) : appendTx(records, o.enforceCap !== false);
      if (needsReservation) reserved = r.lastSeq + SEQ_BLOCK;
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
        if (row[1] === 0) readings.push(rec as Reading);
        else events.push(rec as DeviceEvent);
      }
      return { readings, events, lastSeq: rows[rows.length - 1]![0] };
    },
    read(seqs) {
      const out: Array<Reading | DeviceEvent> = [];
      for (const s of [...seqs].sort((a, b) => a - b)) {
        const row = selOne.get(s);
        if (row) out.push(toRecord(row));
      }
      return out;
    },
    confirm(ranges) {
      if (ranges.length === 0) return 0;
      if (fullSync) db.pragma('synchronous = NORMAL');
      try {
        const r = confirmTx(ranges);
        depth -= r.n;
        alarms -= r.a;
        acked += r.n;
        return r.n;
      } finally {
        if (fullSync) db.pragma('synchronous = FULL');
      }
    },
    floor() {
      return depth > 0 ? (minSeq.get()!.m ?? lastSeq + 1) : lastSeq + 1;
    },
    quarantine(entries) {
      if (entries.length === 0) return;
      quarantineTx(entries);
      quarantinedCount += entries.length;
    },
    quarantined: (limit) => selQuarantine.all(limit),
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
        quarantined: quarantinedCount,
      };
    },
    close() {
      durably(() => setMeta.run(1, 'clean'));
      db.close();
    },
  };
}
