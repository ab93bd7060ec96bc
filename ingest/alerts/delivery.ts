// Delivery of the outbox to the provincial modules: HTTP POST JSON to the module of the alert's
// category (hazard 隐患排查 / emergency 应急处置), HMAC-SHA256 signed, with an idempotency key,
// retried with exponential backoff, dead-lettered after N failures. Described by
// docs/openapi/provincial-modules.yaml.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { AlertCategory, Clock, Logger } from '../../contract/index.ts';
import type { Db } from '../db.ts';
import { ts, type DeliveryPayload } from './store.ts';

export const SIGNATURE_HEADER = 'x-xiaoan-signature';
export const TIMESTAMP_HEADER = 'x-xiaoan-timestamp';
export const IDEMPOTENCY_HEADER = 'idempotency-key';
/** A receiver refuses signatures older or newer than this (replay window). */
export const SIGNATURE_WINDOW_MS = 5 * 60_000;

/** `sha256=<hex>` of HMAC-SHA256(secret, `${timestamp}.${body}`). */
export function signDelivery(secret: string, timestamp: string, body: string): string {
  return 'sha256=' + createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

export function verifySignature(secret: string, timestamp: string | undefined, body: string, signature: string | undefined, now: number): string | null {
  if (!timestamp || !signature) return 'missing signature or timestamp header';
  const t = Number(timestamp);
  if (!Number.isFinite(t)) return 'timestamp header is not epoch milliseconds';
  if (Math.abs(now - t) > SIGNATURE_WINDOW_MS) return `timestamp is outside the ±${SIGNATURE_WINDOW_MS / 60000} min window`;
  const want = Buffer.from(signDelivery(secret, timestamp, body));
  const got = Buffer.from(signature);
  if (want.length !== got.length || !timingSafeEqual(want, got)) return 'signature does not match';
  return null;
}

export interface DeliveryOptions {
  /** URL that receives POSTs for each module */
  hazardUrl: string;
  emergencyUrl: string;
  /** shared HMAC secret */
  secret: string;
  /** attempts before a delivery is dead-lettered (default 8) */
  maxAttempts?: number;
  /** first retry delay, doubled each time up to maxBackoffMs (defaults 1 s, 5 min) */
  backoffMs?: number;
  maxBackoffMs?: number;
  timeoutMs?: number;
}

export interface OutboxRow {
  id: number;
  alert_id: string;
  idempotency_key: string;
  category: AlertCategory;
  transition: string;
  payload: DeliveryPayload;
  attempts: number;
}

export interface DeliveryStats {
  delivered: number;
  retried: number;
  dead: number;
  pending: number;
}

/** Whether an HTTP status can succeed on retry (explicit list, never guessed from text). */
export function retryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

export function createDelivery(opts: { db: Db; clock: Clock; log: Logger; delivery: DeliveryOptions; onDead(row: OutboxRow, reason: string): Promise<void> }) {
  const { db, clock, log } = opts;
  const d = opts.delivery;
  const maxAttempts = d.maxAttempts ?? 8;
  const base = d.backoffMs ?? 1000;
  const maxBackoff = d.maxBackoffMs ?? 300_000;
  const stats: DeliveryStats = { delivered: 0, retried: 0, dead: 0, pending: 0 };
  let running: Promise<number> | null = null;

  const urlOf = (c: AlertCategory) => (c === 'emergency' ? d.emergencyUrl : d.hazardUrl);

  async function post(row: OutboxRow): Promise<{ ok: true; status: number } | { ok: false; status: number | null; error: string; retry: boolean }> {
    const body = JSON.stringify(row.payload);
    const timestamp = String(clock.now());
    try {
      const res = await fetch(urlOf(row.category), {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [IDEMPOTENCY_HEADER]: row.idempotency_key,
          [TIMESTAMP_HEADER]: timestamp,
          [SIGNATURE_HEADER]: signDelivery(d.secret, timestamp, body),
        },
        body,
        signal: AbortSignal.timeout(d.timeoutMs ?? 10_000),
      });
      const text = await res.text().catch(() => '');
      if (res.ok) return { ok: true, status: res.status };
      return { ok: false, status: res.status, error: `HTTP ${res.status} ${text.slice(0, 200)}`, retry: retryableStatus(res.status) };
    } catch (e) {
      const err = e as Error & { cause?: { code?: string } };
      return { ok: false, status: null, error: `${err.name}: ${err.cause?.code ?? err.message}`, retry: true };
    }
  }

  /** Lease due rows (oldest pending transition of each alert only, emergencies first). */
  async function lease(now: number, limit: number): Promise<OutboxRow[]> {
    const r = await db.query<OutboxRow>(
      `update alert_outbox set leased_until = to_timestamp(($1::float8 + 30000) / 1000)
        where id in (
          select o.id from alert_outbox o
           where o.delivered_at is null and o.dead_at is null and o.next_attempt_at <= ${ts(1)}
             and (o.leased_until is null or o.leased_until < ${ts(1)})
             and not exists (select 1 from alert_outbox p where p.alert_id = o.alert_id and p.id < o.id and p.delivered_at is null and p.dead_at is null)
           order by (o.category = 'emergency') desc, o.id
           limit $2
           for update skip locked)
        returning id::float8 as id, alert_id, idempotency_key, category, transition, payload, attempts`,
      [now, limit],
    );
    return r.rows
      .map((x) => ({ ...x, id: Number(x.id), payload: typeof x.payload === 'string' ? JSON.parse(x.payload) : x.payload }))
      .sort((a, b) => (a.category === b.category ? a.id - b.id : a.category === 'emergency' ? -1 : 1));
  }

  async function deliverOne(row: OutboxRow): Promise<void> {
    const res = await post(row);
    const now = clock.now();
    const attempts = row.attempts + 1;
    if (res.ok) {
      await db.query(`update alert_outbox set delivered_at = ${ts(2)}, attempts = $3, last_status = $4, last_error = null, leased_until = null where id = $1`, [row.id, now, attempts, res.status]);
      stats.delivered++;
      log.debug('delivered', { key: row.idempotency_key, module: row.category, transition: row.transition });
      return;
    }
    if (!res.retry || attempts >= maxAttempts) {
      await db.query(`update alert_outbox set dead_at = ${ts(2)}, attempts = $3, last_status = $4, last_error = $5, leased_until = null where id = $1`, [row.id, now, attempts, res.status, res.error]);
      stats.dead++;
      const why = res.retry ? `failed ${attempts} times, last: ${res.error}` : `refused (not retryable): ${res.error}`;
      log.error('delivery dead-lettered', { key: row.idempotency_key, module: row.category, reason: why });
      await opts.onDead(row, why).catch((e) => log.error('dead-letter alert failed', { error: e }));
      return;
    }
    const delay = Math.min(maxBackoff, base * 2 ** (attempts - 1));
    await db.query(
      `update alert_outbox set attempts = $3, last_status = $4, last_error = $5, leased_until = null, next_attempt_at = to_timestamp(($2::float8 + $6::float8) / 1000) where id = $1`,
      [row.id, now, attempts, res.status, res.error, delay],
    );
    stats.retried++;
    log.warn('delivery failed, will retry', { key: row.idempotency_key, module: row.category, attempt: attempts, retryInMs: delay, error: res.error });
  }

  /** Deliver everything due now; returns how many rows were attempted. Concurrent calls share one run. */
  async function deliverDue(): Promise<number> {
    if (running) return running;
    running = (async () => {
      let total = 0;
      try {
        for (;;) {
          const rows = await lease(clock.now(), 50);
          if (rows.length === 0) break;
          // one at a time per alert (lease gives at most one row per alert); alerts in parallel
          await Promise.all(rows.map((r) => deliverOne(r).catch((e) => log.error('delivery fault', { key: r.idempotency_key, error: e }))));
          total += rows.length;
          if (rows.length < 50) break;
        }
      } finally {
        running = null;
      }
      return total;
    })();
    return running;
  }

  async function pending(): Promise<number> {
    const r = await db.query<{ n: number }>(`select count(*)::int as n from alert_outbox where delivered_at is null and dead_at is null`);
    stats.pending = r.rows[0]?.n ?? 0;
    return stats.pending;
  }

  /** resolves when no delivery run is in progress */
  async function idle(): Promise<void> {
    while (running) await running.catch(() => 0);
  }

  return { deliverDue, pending, idle, stats: () => ({ ...stats }) };
}
