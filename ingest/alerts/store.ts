// SQL of the alert store: one open alert per rule and device, every step recorded with who and
// when, every change written to the outbox and announced with pg_notify in the same transaction.
import { randomUUID } from 'node:crypto';
import { ALERT_STATES, type Alert, type AlertCategory, type AlertState, type Localized, type Severity } from '../../contract/index.ts';
import type { Queryable } from '../db.ts';
import { scopeSql, type Scope } from '../scope.ts';

export const ALERT_CHANNEL = 'xiaoan_alert_changes';

export type HistoryAction = 'raised' | 'worsened' | 'acknowledged' | 'escalated' | 'resolved' | 'cleared' | 'action' | 'attachment';
/** Transitions that are delivered to the provincial modules. */
export type DeliveredTransition = 'raised' | 'worsened' | 'acknowledged' | 'escalated' | 'resolved' | 'cleared';

export interface AlertView extends Alert {
  ruleVersion: string;
  reason: Localized;
  ackComment: string | null;
  resolveComment: string | null;
  clearedAt: number | null;
  escalationLevel: number;
  escalateAt: number | null;
}

export interface HistoryEntry {
  id: number;
  alertId: string;
  at: number;
  action: HistoryAction;
  actor: string;
  fromState: AlertState | null;
  toState: AlertState;
  severity: Severity;
  comment: string | null;
  detail: Record<string, unknown>;
}

export interface AlertFilter {
  state?: AlertState | AlertState[] | 'open';
  category?: AlertCategory;
  severity?: Severity;
  drill?: boolean;
  gatewayId?: string;
  deviceId?: string;
  ruleId?: string;
  since?: number;
  until?: number;
  limit?: number;
}

/** Errors of the alert API: `code` maps to an HTTP status; `retry` says whether trying again can help. */
export class AlertError extends Error {
  constructor(
    message: string,
    readonly code: 'not_found' | 'conflict' | 'invalid' | 'forbidden',
    readonly retry = false,
  ) {
    super(message);
    this.name = 'AlertError';
  }
  get status(): number {
    return { not_found: 404, conflict: 409, invalid: 400, forbidden: 403 }[this.code];
  }
}

const ms = (col: string) => `(extract(epoch from ${col}) * 1000)::float8`;
export const ts = (n: number) => `to_timestamp($${n}::float8 / 1000)`;

export const ALERT_COLUMNS = `id, dedup_key, rule_id, rule_version, title_zh, title_en, category, severity, state, drill,
  org_path, gateway_id, device_id, value, event_type, reason_zh, reason_en,
  ${ms('raised_at')} as raised_at, ${ms('acknowledged_at')} as acknowledged_at, acknowledged_by, ack_comment,
  ${ms('resolved_at')} as resolved_at, resolved_by, resolve_comment, ${ms('cleared_at')} as cleared_at,
  escalated_to, escalation_level, escalate_after_ms::float8 as escalate_after_ms, ${ms('escalate_at')} as escalate_at,
  transition_seq, ${ms('updated_at')} as updated_at`;

export interface AlertRow {
  id: string;
  dedup_key: string;
  rule_id: string;
  rule_version: string;
  title_zh: string;
  title_en: string;
  category: AlertCategory;
  severity: Severity;
  state: AlertState;
  drill: boolean;
  org_path: string;
  gateway_id: string;
  device_id: string;
  value: number | null;
  event_type: string | null;
  reason_zh: string;
  reason_en: string;
  raised_at: number;
  acknowledged_at: number | null;
  acknowledged_by: string | null;
  ack_comment: string | null;
  resolved_at: number | null;
  resolved_by: string | null;
  resolve_comment: string | null;
  cleared_at: number | null;
  escalated_to: string | null;
  escalation_level: number;
  escalate_after_ms: number | null;
  escalate_at: number | null;
  transition_seq: number;
  updated_at: number;
}

const n = (v: number | null) => (v === null || v === undefined ? null : Math.round(Number(v)));

export function toView(r: AlertRow): AlertView {
  return {
    id: r.id,
    ruleId: r.rule_id,
    title: { zh: r.title_zh, en: r.title_en },
    category: r.category,
    severity: r.severity,
    state: r.state,
    drill: r.drill,
    orgPath: r.org_path,
    gatewayId: r.gateway_id,
    deviceId: r.device_id,
    value: r.value === null ? null : Number(r.value),
    eventType: r.event_type,
    raisedAt: n(r.raised_at)!,
    acknowledgedAt: n(r.acknowledged_at),
    acknowledgedBy: r.acknowledged_by,
    resolvedAt: n(r.resolved_at),
    resolvedBy: r.resolved_by,
    escalatedTo: r.escalated_to,
    updatedAt: n(r.updated_at)!,
    ruleVersion: r.rule_version,
    reason: { zh: r.reason_zh, en: r.reason_en },
    ackComment: r.ack_comment,
    resolveComment: r.resolve_comment,
    clearedAt: n(r.cleared_at),
    escalationLevel: Number(r.escalation_level),
    escalateAt: n(r.escalate_at),
  };
}

/** The contract shape (what the provincial modules receive). */
export function toContract(v: AlertView): Alert {
  return {
    id: v.id,
    ruleId: v.ruleId,
    title: v.title,
    category: v.category,
    severity: v.severity,
    state: v.state,
    drill: v.drill,
    orgPath: v.orgPath,
    gatewayId: v.gatewayId,
    deviceId: v.deviceId,
    value: v.value,
    eventType: v.eventType,
    raisedAt: v.raisedAt,
    acknowledgedAt: v.acknowledgedAt,
    acknowledgedBy: v.acknowledgedBy,
    resolvedAt: v.resolvedAt,
    resolvedBy: v.resolvedBy,
    escalatedTo: v.escalatedTo,
    updatedAt: v.updatedAt,
  };
}

export interface DeliveryPayload {
  v: 1;
  module: AlertCategory;
  transition: DeliveredTransition;
  idempotencyKey: string;
  at: number;
  actor: string;
  comment: string | null;
  drill: boolean;
  reason: Localized;
  alert: Alert;
}

export async function getOpenByKey(tx: Queryable, key: string): Promise<AlertRow | null> {
  const r = await tx.query<AlertRow>(`select ${ALERT_COLUMNS} from alerts where dedup_key = $1 and state in ('raised', 'acknowledged') for update`, [key]);
  return r.rows[0] ?? null;
}

export async function getById(tx: Queryable, id: string, scope?: Scope, lock = false): Promise<AlertRow | null> {
  const params: unknown[] = [id];
  const where = scope ? ` and ${scopeSql(scope, 'org_path', params)}` : '';
  const r = await tx.query<AlertRow>(`select ${ALERT_COLUMNS} from alerts where id = $1${where}${lock ? ' for update' : ''}`, params);
  return r.rows[0] ?? null;
}

/**
 * Record a step: history, outbox (for delivered transitions) and pg_notify, all in `tx`.
 * `row` is the alert after the change (its transition_seq already advanced).
 */
export async function recordStep(
  tx: Queryable,
  row: AlertRow,
  step: { action: HistoryAction; actor: string; fromState: AlertState | null; comment?: string | null; detail?: Record<string, unknown>; now: number; deliver: boolean },
): Promise<void> {
  const view = toView(row);
  await tx.query(
    `insert into alert_history (alert_id, at, action, actor, from_state, to_state, severity, comment, detail)
     values ($1, ${ts(2)}, $3, $4, $5, $6, $7, $8, $9::jsonb)`,
    [row.id, step.now, step.action, step.actor, step.fromState, row.state, row.severity, step.comment ?? null, JSON.stringify(step.detail ?? {})],
  );
  if (step.deliver) {
    const key = `${row.id}:${row.transition_seq}`;
    const payload: DeliveryPayload = {
      v: 1,
      module: row.category,
      transition: step.action as DeliveredTransition,
      idempotencyKey: key,
      at: step.now,
      actor: step.actor,
      comment: step.comment ?? null,
      drill: row.drill,
      reason: view.reason,
      alert: toContract(view),
    };
    await tx.query(
      `insert into alert_outbox (alert_id, idempotency_key, category, transition, payload, created_at, next_attempt_at)
       values ($1, $2, $3, $4, $5::jsonb, ${ts(6)}, ${ts(6)}) on conflict (idempotency_key) do nothing`,
      [row.id, key, row.category, step.action, JSON.stringify(payload), step.now],
    );
  }
  await tx.query(`select pg_notify($1, $2)`, [
    ALERT_CHANNEL,
    JSON.stringify({
      id: row.id,
      orgPath: row.org_path,
      state: row.state,
      category: row.category,
      severity: row.severity,
      drill: row.drill,
      ruleId: row.rule_id,
      deviceId: row.device_id,
      action: step.action,
      escalatedTo: row.escalated_to,
      at: step.now,
    }),
  ]);
}

export interface NewAlert {
  key: string;
  ruleId: string;
  ruleVersion: string;
  title: Localized;
  category: AlertCategory;
  severity: Severity;
  drill: boolean;
  orgPath: string;
  gatewayId: string;
  deviceId: string;
  value: number | null;
  eventType: string | null;
  reason: Localized;
  raisedAt: number;
  escalateAfterMs: number | null;
}

export async function insertAlert(tx: Queryable, a: NewAlert, now: number): Promise<AlertRow> {
  const id = randomUUID();
  const r = await tx.query<AlertRow>(
    `insert into alerts (id, dedup_key, rule_id, rule_version, title_zh, title_en, category, severity, state, drill, org_path,
       gateway_id, device_id, value, event_type, reason_zh, reason_en, raised_at, escalate_after_ms, escalate_at, transition_seq, updated_at)
     values ($1, $2, $3, $4, $5, $6, $7, $8, 'raised', $9, $10, $11, $12, $13, $14, $15, $16, ${ts(17)}, $18::bigint,
       case when $18::bigint is null then null else to_timestamp(($19::float8 + $18::float8) / 1000) end, 1, ${ts(19)})
     returning ${ALERT_COLUMNS}`,
    [id, a.key, a.ruleId, a.ruleVersion, a.title.zh, a.title.en, a.category, a.severity, a.drill, a.orgPath, a.gatewayId, a.deviceId, a.value, a.eventType, a.reason.zh, a.reason.en, a.raisedAt, a.escalateAfterMs, now],
  );
  return r.rows[0]!;
}

/** Apply column changes, advance transition_seq and updated_at; returns the new row. */
export async function updateAlert(tx: Queryable, id: string, set: Record<string, unknown>, now: number): Promise<AlertRow> {
  const params: unknown[] = [id, now];
  const parts: string[] = [];
  for (const [col, v] of Object.entries(set)) {
    if (!/^[a-z_]+$/.test(col)) throw new Error(`bad column ${col}`);
    if (v && typeof v === 'object' && 'at' in (v as object)) {
      params.push((v as { at: number | null }).at);
      parts.push(`${col} = case when $${params.length}::float8 is null then null else to_timestamp($${params.length}::float8 / 1000) end`);
    } else {
      params.push(v);
      parts.push(`${col} = $${params.length}`);
    }
  }
  const r = await tx.query<AlertRow>(
    `update alerts set ${parts.join(', ')}, transition_seq = transition_seq + 1, updated_at = ${ts(2)} where id = $1 returning ${ALERT_COLUMNS}`,
    params,
  );
  return r.rows[0]!;
}

export async function listAlerts(db: Queryable, scope: Scope, f: AlertFilter = {}): Promise<AlertView[]> {
  const params: unknown[] = [];
  const where = [scopeSql(scope, 'org_path', params)];
  if (f.state === 'open') where.push(`state in ('raised', 'acknowledged')`);
  else if (f.state) {
    const states = Array.isArray(f.state) ? f.state : [f.state];
    for (const s of states) if (!(ALERT_STATES as readonly string[]).includes(s)) throw new AlertError(`state "${s}" is not one of ${ALERT_STATES.join(', ')}, open`, 'invalid');
    params.push(states);
    where.push(`state = any($${params.length}::text[])`);
  }
  const eq = (col: string, v: unknown) => {
    if (v === undefined) return;
    params.push(v);
    where.push(`${col} = $${params.length}`);
  };
  eq('category', f.category);
  eq('severity', f.severity);
  eq('drill', f.drill);
  eq('gateway_id', f.gatewayId);
  eq('device_id', f.deviceId);
  eq('rule_id', f.ruleId);
  if (f.since !== undefined) (params.push(f.since), where.push(`raised_at >= ${ts(params.length)}`));
  if (f.until !== undefined) (params.push(f.until), where.push(`raised_at < ${ts(params.length)}`));
  params.push(Math.min(Math.max(f.limit ?? 200, 1), 5000));
  const r = await db.query<AlertRow>(
    `select ${ALERT_COLUMNS} from alerts where ${where.join(' and ')} order by raised_at desc, id limit $${params.length}`,
    params,
  );
  return r.rows.map(toView);
}

export async function alertHistory(db: Queryable, scope: Scope, id: string): Promise<HistoryEntry[]> {
  const params: unknown[] = [id];
  const r = await db.query<{
    id: number;
    alert_id: string;
    at: number;
    action: HistoryAction;
    actor: string;
    from_state: AlertState | null;
    to_state: AlertState;
    severity: Severity;
    comment: string | null;
    detail: Record<string, unknown>;
  }>(
    `select h.id::float8 as id, h.alert_id, ${ms('h.at')} as at, h.action, h.actor, h.from_state, h.to_state, h.severity, h.comment, h.detail
       from alert_history h join alerts a on a.id = h.alert_id
      where h.alert_id = $1 and ${scopeSql(scope, 'a.org_path', params)} order by h.id`,
    params,
  );
  return r.rows.map((x) => ({
    id: Number(x.id),
    alertId: x.alert_id,
    at: Math.round(Number(x.at)),
    action: x.action,
    actor: x.actor,
    fromState: x.from_state,
    toState: x.to_state,
    severity: x.severity,
    comment: x.comment,
    detail: typeof x.detail === 'string' ? JSON.parse(x.detail) : x.detail,
  }));
}
