// The gateway's device registry: a local SQLite file the gateway, the CLI (`xiaoan device …`) and
// the REST API share. Validation reports every problem of a request or CSV file at once, each
// with its row and field, and a file is imported whole or not at all.
// Secrets at rest (edge/at-rest.ts): a device URL is sealed with AES-256-GCM (it may carry a
// camera's password), an MQTT device password is kept only as its scrypt hash; the file is 0600
// in a 0700 data dir. Rows written in clear by an older version are sealed when the file is opened.
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { isSealed, loadSecretKey, privateDir, privateFile, seal, unseal } from './at-rest.ts';
import { hashSecretSync, verifySecretSync } from '../contract/index.ts';
import { deviceSpecSchema, type DeviceEnrolment } from './config.ts';
import { URL_SCHEMES, type ProfileInfo } from './drivers.ts';
import type { DeviceSpec } from '../device-drivers/types.ts';

export interface EnrolledDevice extends DeviceSpec {
  /** an MQTT device has a password on the device broker (only its hash is stored) */
  hasPassword: boolean;
  source: string;
  enrolledAt: number;
  updatedAt: number;
}

export interface Problem {
  /** 1-based data row of a CSV file (the header is row 0); absent for a single request */
  row?: number;
  field: string;
  message: string;
}

export function formatProblem(p: Problem): string {
  return `${p.row !== undefined ? `row ${p.row}, ` : ''}${p.field}: ${p.message}`;
}

export class EnrolmentError extends Error {
  constructor(readonly problems: Problem[]) {
    super(`登记无效 enrolment rejected (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.map(formatProblem).join('\n  ')}`);
    this.name = 'EnrolmentError';
  }
}

export interface CommandAuditEntry {
  id: string;
  kind: string;
  issuedBy: string;
  issuedAt: number;
  receivedAt: number;
  ok: boolean;
  message: string;
  detail?: unknown;
}

export interface Registry {
  list(): EnrolledDevice[];
  get(id: string): EnrolledDevice | undefined;
  /** validated input only (see validateEnrolment) */
  upsert(d: DeviceEnrolment, source: string): EnrolledDevice;
  upsertMany(ds: DeviceEnrolment[], source: string): void;
  remove(id: string): boolean;
  verifyPassword(id: string, password: string): boolean;
  /** changes when another connection (the CLI) wrote the file */
  dataVersion(): number;
  audit(e: CommandAuditEntry): void;
  /** true when a command id was already handled (replay protection) */
  seenCommand(id: string): boolean;
  auditLog(limit?: number): CommandAuditEntry[];
  close(): void;
}

/** MQTT device passwords: only the hash is kept (contract/secrets.ts). */
export const hashPassword = hashSecretSync;
const checkPassword = (stored: string, password: string): boolean => verifySecretSync(password, stored);

interface DeviceRow {
  id: string;
  profile: string;
  url: string;
  name: string | null;
  building: string | null;
  room: string | null;
  interval_ms: number | null;
  secret_hash: string | null;
  source: string;
  enrolled_at: number;
  updated_at: number;
}

const fromRowWith = (key: Buffer) => (r: DeviceRow): EnrolledDevice => ({
  id: r.id,
  profile: r.profile,
  url: unseal(key, r.url),
  ...(r.name ? { name: r.name } : {}),
  ...(r.building ? { building: r.building } : {}),
  ...(r.room ? { room: r.room } : {}),
  ...(r.interval_ms ? { intervalMs: r.interval_ms } : {}),
  hasPassword: !!r.secret_hash,
  source: r.source,
  enrolledAt: r.enrolled_at,
  updatedAt: r.updated_at,
});

export interface RegistryOptions {
  /** the edge setting edgeSecretKey (XIAOAN_EDGE_SECRET_KEY / _FILE); default: {dataDir}/secret.key */
  secretKey?: string;
}

export function openRegistry(file: string, now: () => number = Date.now, opts: RegistryOptions = {}): Registry {
  let key: Buffer;
  if (file === ':memory:') key = randomBytes(32);
  else {
    privateDir(dirname(file));
    privateFile(file);
    key = loadSecretKey(dirname(file), opts.secretKey);
  }
  const fromRow = fromRowWith(key);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  // a replaced or removed device's URL is zeroed in the file, not left in a free page
  db.pragma('secure_delete = ON');
  db.exec(`
    CREATE TABLE IF NOT EXISTS devices (
      id TEXT PRIMARY KEY,
      profile TEXT NOT NULL,
      url TEXT NOT NULL,
      name TEXT, building TEXT, room TEXT,
      interval_ms INTEGER,
      secret_hash TEXT,
      source TEXT NOT NULL,
      enrolled_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS command_audit (
      id TEXT NOT NULL,
      kind TEXT NOT NULL,
      issued_by TEXT NOT NULL,
      issued_at INTEGER NOT NULL,
      received_at INTEGER NOT NULL,
      ok INTEGER NOT NULL,
      message TEXT NOT NULL,
      detail TEXT
    );
    CREATE INDEX IF NOT EXISTS command_audit_id ON command_audit(id);
  `);
  sealClearUrls(db, key);
  const sel = db.prepare<[string], DeviceRow>('SELECT * FROM devices WHERE id = ?');
  const all = db.prepare<[], DeviceRow>('SELECT * FROM devices ORDER BY id');
  const ins = db.prepare(`
    INSERT INTO devices(id, profile, url, name, building, room, interval_ms, secret_hash, source, enrolled_at, updated_at)
    VALUES (@id, @profile, @url, @name, @building, @room, @interval_ms, @secret_hash, @source, @now, @now)
    ON CONFLICT(id) DO UPDATE SET profile = excluded.profile, url = excluded.url, name = excluded.name,
      building = excluded.building, room = excluded.room, interval_ms = excluded.interval_ms,
      secret_hash = coalesce(excluded.secret_hash, devices.secret_hash), source = excluded.source, updated_at = excluded.updated_at`);
  const del = db.prepare('DELETE FROM devices WHERE id = ?');
  const insAudit = db.prepare(
    'INSERT INTO command_audit(id, kind, issued_by, issued_at, received_at, ok, message, detail) VALUES (?,?,?,?,?,?,?,?)',
  );
  const seen = db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM command_audit WHERE id = ?');
  const auditSel = db.prepare<[number], { id: string; kind: string; issued_by: string; issued_at: number; received_at: number; ok: number; message: string; detail: string | null }>(
    'SELECT * FROM command_audit ORDER BY rowid DESC LIMIT ?',
  );
  const write = (d: DeviceEnrolment, source: string) =>
    ins.run({
      id: d.id,
      profile: d.profile,
      url: seal(key, d.url),
      name: d.name ?? null,
      building: d.building ?? null,
      room: d.room ?? null,
      interval_ms: d.intervalMs ?? null,
      secret_hash: d.password ? hashPassword(d.password) : null,
      source,
      now: now(),
    });
  const many = db.transaction((ds: DeviceEnrolment[], source: string) => ds.forEach((d) => write(d, source)));

  return {
    list: () => all.all().map(fromRow),
    get: (id) => {
      const r = sel.get(id);
      return r ? fromRow(r) : undefined;
    },
    upsert(d, source) {
      write(d, source);
      return fromRow(sel.get(d.id)!);
    },
    upsertMany: (ds, source) => many(ds, source),
    remove: (id) => del.run(id).changes > 0,
    verifyPassword(id, password) {
      const r = sel.get(id);
      return !!r?.secret_hash && checkPassword(r.secret_hash, password);
    },
    dataVersion: () => db.pragma('data_version', { simple: true }) as number,
    audit: (e) =>
      insAudit.run(e.id, e.kind, e.issuedBy, e.issuedAt, e.receivedAt, e.ok ? 1 : 0, e.message, e.detail === undefined ? null : JSON.stringify(e.detail)),
    seenCommand: (id) => seen.get(id)!.n > 0,
    auditLog: (limit = 100) =>
      auditSel.all(limit).map((r) => ({
        id: r.id,
        kind: r.kind,
        issuedBy: r.issued_by,
        issuedAt: r.issued_at,
        receivedAt: r.received_at,
        ok: r.ok === 1,
        message: r.message,
        ...(r.detail ? { detail: JSON.parse(r.detail) as unknown } : {}),
      })),
    close: () => db.close(),
  };
}

/** Seal the URLs an older version wrote in clear (one transaction; idempotent). */
function sealClearUrls(db: Database.Database, key: Buffer): void {
  const rows = db.prepare<[], { id: string; url: string }>('SELECT id, url FROM devices').all().filter((r) => !isSealed(r.url));
  if (!rows.length) return;
  const upd = db.prepare('UPDATE devices SET url = ? WHERE id = ?');
  db.transaction(() => rows.forEach((r) => upd.run(seal(key, r.url), r.id)))();
  // rewrite the file so no page keeps the clear text, and empty the WAL
  db.exec('VACUUM');
  db.pragma('wal_checkpoint(TRUNCATE)');
}

/**
 * Check one device enrolment: the schema, the profile exists, the URL suits the profile's
 * protocol. Returns every problem (with `row` when given), never just the first.
 */
export function validateEnrolment(
  input: unknown,
  profiles: ProfileInfo[],
  row?: number,
): { device?: DeviceEnrolment; problems: Problem[] } {
  const at = (field: string, message: string): Problem => (row === undefined ? { field, message } : { row, field, message });
  const problems: Problem[] = [];
  const r = deviceSpecSchema.safeParse(input);
  if (!r.success) {
    for (const i of r.error.issues) {
      const field = i.path.length ? i.path.join('.') : '(row)';
      const missing = i.code === 'invalid_type' && (i as { input?: unknown }).input === undefined;
      problems.push(
        at(
          field,
          i.code === 'unrecognized_keys'
            ? `unknown field(s) ${(i as { keys?: string[] }).keys?.join(', ')}; fields are id, profile, url, name, building, room, intervalMs, password`
            : missing
              ? '必填 required'
              : i.message,
        ),
      );
    }
  }
  const raw = (input ?? {}) as Record<string, unknown>;
  const profileId = typeof raw.profile === 'string' ? raw.profile : undefined;
  const profile = profileId ? profiles.find((p) => p.id === profileId) : undefined;
  if (profileId && !profile) {
    problems.push(at('profile', `未知设备型号 unknown profile "${profileId}"; known: ${profiles.map((p) => p.id).join(', ')}`));
  }
  if (typeof raw.url === 'string' && raw.url) {
    let url: URL | undefined;
    try {
      url = new URL(raw.url);
    } catch {
      problems.push(at('url', `"${raw.url}" is not a URL; e.g. modbus-tcp://192.168.1.20:502?unit=1, onvif://user:pass@HOST, mqtt://DEVICE-ID`));
    }
    if (url && profile) {
      const schemes = URL_SCHEMES[profile.protocol] ?? [];
      if (!schemes.includes(url.protocol)) {
        problems.push(at('url', `profile ${profile.id} speaks ${profile.protocol}; the url must start with ${schemes.map((s) => s + '//').join(' or ')}`));
      } else if (url.protocol === 'modbus-tcp:') {
        if (!url.hostname) problems.push(at('url', 'modbus-tcp:// needs a host, e.g. modbus-tcp://192.168.1.20:502?unit=1'));
        const unit = url.searchParams.get('unit');
        if (unit !== null && !(/^\d+$/.test(unit) && Number(unit) >= 0 && Number(unit) <= 247)) problems.push(at('url', `unit "${unit}" must be 0–247 (Modbus unit identifier)`));
      } else if (url.protocol === 'mqtt:') {
        if (!url.hostname) problems.push(at('url', 'mqtt:// needs the device id, e.g. mqtt://gate-1'));
      }
    }
    if (url && url.protocol === 'mqtt:' && raw.password === undefined) {
      problems.push(at('password', 'an MQTT device needs a password for the gateway\'s device broker (at least 8 characters)'));
    }
  }
  if (raw.password !== undefined && profile && profile.protocol !== 'mqtt') {
    problems.push(at('password', `only MQTT devices log in to the device broker; put ${profile.protocol} credentials in the url`));
  }
  return problems.length || !r.success ? { problems } : { device: r.data, problems };
}

const CSV_FIELDS = ['id', 'profile', 'url', 'name', 'building', 'room', 'intervalMs', 'password'] as const;

/** RFC 4180 CSV (quotes, doubled quotes, CRLF). Returns the rows as arrays of cells. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  let i = 0;
  const t = text.replace(/^\uFEFF/, '');
  while (i < t.length) {
    const c = t[i]!;
    if (quoted) {
      if (c === '"' && t[i + 1] === '"') { cell += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i++; continue; }
      cell += c; i++; continue;
    }
    if (c === '"' && cell === '') { quoted = true; i++; continue; }
    if (c === ',') { row.push(cell); cell = ''; i++; continue; }
    if (c === '\r' && t[i + 1] === '\n') i++;
    if (c === '\n' || c === '\r') { row.push(cell); rows.push(row); row = []; cell = ''; i++; continue; }
    cell += c; i++;
  }
  if (cell !== '' || row.length) { row.push(cell); rows.push(row); }
  return rows.filter((r) => !(r.length === 1 && r[0]!.trim() === ''));
}

/**
 * A CSV of devices (header: id,profile,url[,name,building,room,intervalMs,password]) checked as a
 * whole: every problem of every row, with its row number and field.
 */
export function validateDeviceCsv(text: string, profiles: ProfileInfo[], existing: string[] = []): { devices: DeviceEnrolment[]; problems: Problem[] } {
  const rows = parseCsv(text);
  const problems: Problem[] = [];
  if (rows.length === 0) return { devices: [], problems: [{ row: 0, field: '(file)', message: 'the file is empty; the first line is the header id,profile,url,…' }] };
  const header = rows[0]!.map((h) => h.trim());
  for (const h of header) if (!(CSV_FIELDS as readonly string[]).includes(h)) problems.push({ row: 0, field: h || '(empty)', message: `unknown column; columns are ${CSV_FIELDS.join(',')}` });
  for (const need of ['id', 'profile', 'url']) if (!header.includes(need)) problems.push({ row: 0, field: need, message: 'required column is missing from the header' });
  if (problems.length) return { devices: [], problems };
  const devices: DeviceEnrolment[] = [];
  const ids = new Map<string, number>();
  rows.slice(1).forEach((cells, k) => {
    const row = k + 1;
    if (cells.length !== header.length) {
      problems.push({ row, field: '(row)', message: `has ${cells.length} cells; the header has ${header.length}` });
      return;
    }
    const obj: Record<string, unknown> = {};
    header.forEach((h, j) => {
      const v = cells[j]!.trim();
      if (v === '') return;
      if (h === 'intervalMs') obj[h] = /^\d+$/.test(v) ? Number(v) : v;
      else obj[h] = v;
    });
    if (typeof obj.intervalMs === 'string') {
      problems.push({ row, field: 'intervalMs', message: `"${obj.intervalMs}" is not a whole number of milliseconds` });
      delete obj.intervalMs;
    }
    const r = validateEnrolment(obj, profiles, row);
    problems.push(...r.problems);
    if (typeof obj.id === 'string') {
      if (ids.has(obj.id)) problems.push({ row, field: 'id', message: `"${obj.id}" repeats row ${ids.get(obj.id)}` });
      else ids.set(obj.id, row);
    }
    if (r.device) devices.push(r.device);
  });
  void existing;
  return { devices, problems };
}
