// The alerting tier: feeds stored batches to the rule engine, persists what it says (one open
// alert per rule and device), runs the lifecycle (raised → acknowledged → resolved / cleared,
// escalation when nobody acknowledges), drills, linkage and delivery to the provincial modules.
import { inScope, parseOrgPath, severityRank, silentLogger, systemClock, type Clock, type DeviceEvent, type GatewayStatus, type Logger } from '../../contract/index.ts';
import {
  createRuleEngine,
  type AlertTransition,
  type CompiledCalendar,
  type CompiledRule,
  type DeviceInfo,
  type EngineResult,
  type EngineSnapshot,
  type RuleEngine,
  type RuleSet,
} from '../../rules/index.ts';
import type { Db, Queryable } from '../db.ts';
import { scopeSql, type Scope } from '../scope.ts';
import type { BatchListener, CommandSender, StoredBatch } from '../types.ts';
import { createDelivery, type DeliveryOptions, type DeliveryStats, type OutboxRow } from './delivery.ts';
import { createLinkage, type LinkageOptions } from './linkage.ts';
import { createRulebook, type Rulebook } from './rulebook.ts';
import {
  AlertError,
  alertHistory,
  getById,
  getOpenByKey,
  insertAlert,
  listAlerts,
  recordStep,
  toView,
  ts,
  updateAlert,
  ALERT_COLUMNS,
  type AlertFilter,
  type AlertRow,
  type AlertView,
  type HistoryEntry,
} from './store.ts';

export interface AlertingOptions {
  db: Db;
  /** compiled rules (compileRules(...).rules) or the whole rule set (rules and calendars) */
  rules: readonly CompiledRule[] | RuleSet;
  calendars?: readonly CompiledCalendar[];
  clock?: Clock;
  log?: Logger;
  commands?: CommandSender;
  delivery?: DeliveryOptions;
  linkage?: LinkageOptions;
  /** how often tick() runs by itself (default 1000 ms); 0 = only when called */
  tickMs?: number;
  /** how often devices are checked for silence (default 5000 ms; durations complete on every tick) */
  absenceEveryMs?: number;
  /** how often rule state of sites without alert changes is saved (default 5000 ms) */
  stateSaveMs?: number;
  /** start a delivery run right after each alert change (default true; tests turn it off to step delivery by hand) */
  deliverOnChange?: boolean;
  /** only sites below this org path are this worker's (default: all) */
  region?: string;
  /**
   * Change control: load rules through a rulebook (library + these folders + versions saved through
   * the API), and hot-reload on every change (rule_versions trigger, folder edits). When given, the
   * rulebook's rule set replaces `rules` once it is loaded.
   */
  rulebook?: { dirs?: string[]; library?: boolean; watch?: boolean };
}

export interface DrillInfo {
  id: number;
  orgPath: string;
  /** the staged devices (`gateway/device`): only what they report is a drill */
  devices: string[];
  startsAt: number;
  endsAt: number;
  startedBy: string;
}

export interface AlertAction {
  id: number;
  at: number;
  action: string;
  gatewayId: string | null;
  deviceId: string | null;
  ok: boolean;
  detail: string;
}

export interface Alerting {
  listener: BatchListener;
  /** time-based work: durations, silences, escalation, drills, state saves, delivery */
  tick(): Promise<void>;
  list(scope: Scope, filter?: AlertFilter): Promise<AlertView[]>;
  get(scope: Scope, id: string): Promise<AlertView | null>;
  history(scope: Scope, id: string): Promise<HistoryEntry[]>;
  actions(scope: Scope, id: string): Promise<AlertAction[]>;
  attachments(scope: Scope, id: string): Promise<{ id: number; kind: string; mime: string; deviceId: string | null; createdAt: number; data: Buffer }[]>;
  acknowledge(scope: Scope, id: string, user: string, comment?: string): Promise<AlertView>;
  resolve(scope: Scope, id: string, user: string, comment?: string): Promise<AlertView>;
  /**
   * A drill window at `orgPath` staging `devices` (`gateway/device`, or a device id of the site).
   * Only the staged devices' readings and events, and events a device flags as drill (a test
   * press), are drills; every other alarm at the site stays real.
   */
  startDrill(scope: Scope, orgPath: string, minutes: number, user: string, devices?: readonly string[]): Promise<DrillInfo>;
  activeDrills(scope: Scope): Promise<DrillInfo[]>;
  /** hot reload: open alerts and rule state of rules that keep their id are kept */
  setRules(rules: readonly CompiledRule[] | RuleSet): void;
  rules(): readonly CompiledRule[];
  /** the rulebook when `rulebook` was given (save / versions / audit) */
  readonly rulebook: Rulebook | null;
  /** deliver what is due now (also runs on every tick) */
  deliver(): Promise<number>;
  stats(): { evaluated: number; transitions: number; faults: number; delivery: DeliveryStats | null; queued: number };
  stop(): Promise<void>;
}

const DEAD_LETTER_RULE = 'delivery-dead-letter';

function ensureUser(user: string): string {
  if (typeof user !== 'string' || user.trim() === '' || user.length > 128) throw new AlertError('user must be a non-empty name of at most 128 characters / 须给出操作人', 'invalid');
  return user.trim();
}
function ensureComment(comment: string | undefined): string | null {
  if (comment === undefined || comment === null) return null;
  if (typeof comment !== 'string' || comment.length > 2000) throw new AlertError('comment must be text of at most 2000 characters / 备注过长', 'invalid');
  return comment.trim() || null;
}

/** Escalation ladder: school → county → city (a college → university → province). */
export function nextTier(orgPath: string, current: string | null): string | null {
  const from = current ?? orgPath;
  const i = from.lastIndexOf('/');
  if (i < 0) return null;
  const parent = from.slice(0, i);
  const level = parseOrgPath(parent).level;
  if (level === 'province' && parseOrgPath(orgPath).level !== 'university' && parseOrgPath(orgPath).level !== 'college') return null;
  return parent;
}

export async function createAlerting(opts: AlertingOptions): Promise<Alerting> {
  const db = opts.db;
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? silentLogger;
  const ruleSet = (r: AlertingOptions['rules']) => (Array.isArray(r) ? { rules: r as CompiledRule[], calendars: opts.calendars ?? [] } : { rules: (r as RuleSet).rules, calendars: (r as RuleSet).calendars ?? opts.calendars ?? [] });
  const initial = ruleSet(opts.rules);

  // ---- restore rule state per site ----
  const states = await db.query<{ site: string; state: EngineSnapshot | string }>(
    opts.region ? `select site, state from rule_state where site = $1 or site like $1 || '/%'` : `select site, state from rule_state`,
    opts.region ? [opts.region] : [],
  );
  const engine: RuleEngine = createRuleEngine(initial.rules, {
    calendars: initial.calendars,
    state: states.rows.map((r) => (typeof r.state === 'string' ? JSON.parse(r.state) : r.state)),
  });
  // The store is the desk's truth: a latch that believes its alert open when none is (resolved by
  // another process, or before latches were kept) is resolved, so the next hit raises again.
  const openNow = await db.query<{ dedup_key: string; state: 'raised' | 'acknowledged' }>(
    opts.region
      ? `select dedup_key, state from alerts where state in ('raised', 'acknowledged') and (org_path = $1 or org_path like $1 || '/%')`
      : `select dedup_key, state from alerts where state in ('raised', 'acknowledged')`,
    opts.region ? [opts.region] : [],
  );
  const reconciled = engine.reconcile(new Map(openNow.rows.map((r) => [r.dedup_key, r.state])));
  log.info('alerting started', { rules: initial.rules.length, sitesRestored: states.rows.length, latchesReconciled: reconciled.length });

  const counters = { evaluated: 0, transitions: 0, faults: 0 };
  /** silence while the platform itself was down is not the devices' fault */
  const startedAt = clock.now();
  const dirtySites = new Set<string>();
  let lastStateSave = clock.now();
  let stopped = false;

  // ---- serial work with two lanes: emergencies never wait behind bulk readings ----
  // Batches are evaluated one after another (the engine is synchronous and fast); the transitions
  // of every batch taken together are stored in one transaction, so a backlog drains in a few
  // commits instead of one commit per batch. Other work (ticks, acknowledgements) runs in order.
  type Item =
    | { kind: 'batch'; batch: StoredBatch; what: 'events' | 'readings'; resolve: () => void; reject: (e: unknown) => void }
    | { kind: 'task'; fn: () => Promise<void>; resolve: () => void; reject: (e: unknown) => void };
  const urgent: Item[] = [];
  const bulk: Item[] = [];
  let pumping: Promise<void> | null = null;
  const MAX_TAKE = 500;
  const runItems = async (items: Item[], lane: 'urgent' | 'bulk') => {
    let out: AlertTransition[] = [];
    let waiting: Item[] = [];
    const flush = async () => {
      if (waiting.length === 0) return;
      const done = waiting;
      const ts = out;
      waiting = [];
      out = [];
      await apply(ts); // never throws: what cannot be stored now is kept and retried
      for (const w of done) w.resolve();
    };
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (lane === 'bulk' && urgent.length > 0) {
        // an emergency arrived: store what is evaluated, put the rest back, let it go first
        bulk.unshift(...items.slice(i));
        break;
      }
      if (it.kind === 'batch') {
        try {
          out.push(...(await evaluate(it.batch, it.what)));
          waiting.push(it);
        } catch (e) {
          it.reject(e);
        }
        continue;
      }
      await flush();
      await it.fn().then(it.resolve, it.reject);
    }
    await flush();
  };
  const pump = () => {
    if (pumping) return pumping;
    pumping = (async () => {
      try {
        for (;;) {
          const lane = urgent.length ? 'urgent' : 'bulk';
          const items = (lane === 'urgent' ? urgent : bulk).splice(0, MAX_TAKE);
          if (items.length === 0) break;
          await runItems(items, lane);
        }
      } finally {
        pumping = null;
      }
    })();
    return pumping;
  };
  const enqueue = (lane: 'urgent' | 'bulk', fn: () => Promise<void>): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      (lane === 'urgent' ? urgent : bulk).push({ kind: 'task', fn, resolve, reject });
      void pump();
    });
  const enqueueBatch = (lane: 'urgent' | 'bulk', batch: StoredBatch, what: 'events' | 'readings'): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      (lane === 'urgent' ? urgent : bulk).push({ kind: 'batch', batch, what, resolve, reject });
      void pump();
    });

  // ---- devices and drills (cached) ----
  const deviceCache = new Map<string, { at: number; devices: Map<string, DeviceInfo> }>();
  async function devicesOf(gatewayId: string, need: Iterable<string>): Promise<Map<string, DeviceInfo>> {
    const c = deviceCache.get(gatewayId);
    const now = clock.now();
    const missing = c ? [...need].some((d) => !c.devices.has(d)) : true;
    if (c && now - c.at < 30_000 && (!missing || now - c.at < 5_000)) return c.devices;
    const r = await db.query<{ device_id: string; org_path: string; profile: string; building: string | null; room: string | null; expected_interval_ms: number | null; state: string; last_seen: number | null }>(
      `select device_id, org_path, profile, building, room, expected_interval_ms, state, (extract(epoch from last_seen) * 1000)::float8 as last_seen from devices where gateway_id = $1`,
      [gatewayId],
    );
    const m = new Map<string, DeviceInfo>();
    for (const d of r.rows) m.set(d.device_id, { gatewayId, deviceId: d.device_id, orgPath: d.org_path, profile: d.profile, building: d.building, room: d.room, expectedIntervalMs: d.expected_interval_ms, state: d.state, lastSeen: d.last_seen === null ? null : Number(d.last_seen) });
    deviceCache.set(gatewayId, { at: now, devices: m });
    return m;
  }

  // Drills by source (DESIGN "Alerts"): a drill row names its staged devices; a record is a drill
  // when its device is staged by a drill active at its time (or now), or when it says so itself.
  let drills: { orgPath: string; startsAt: number; endsAt: number; devices: Set<string> }[] = [];
  async function refreshDrills() {
    const now = clock.now();
    const r = await db.query<{ org_path: string; starts_at: number; ends_at: number; devices: string[] }>(
      `select org_path, (extract(epoch from starts_at) * 1000)::float8 as starts_at, (extract(epoch from ends_at) * 1000)::float8 as ends_at, devices from drills where ends_at > ${ts(1)}`,
      [now],
    );
    drills = r.rows.map((d) => ({ orgPath: d.org_path, startsAt: Number(d.starts_at), endsAt: Number(d.ends_at), devices: new Set(d.devices ?? []) }));
  }
  async function stagedInDb(tx: Queryable, gatewayId: string, deviceId: string, at: number, now: number): Promise<boolean> {
    const r = await tx.query(
      `select 1 from drills where $3 = any(devices) and ((starts_at <= ${ts(1)} and ends_at > ${ts(1)}) or (starts_at <= ${ts(2)} and ends_at > ${ts(2)})) limit 1`,
      [at, now, `${gatewayId}/${deviceId}`],
    );
    return r.rowCount > 0;
  }
  /** is this device staged by a drill active at `at` or now? */
  const staged = (gatewayId: string, deviceId: string, at: number, now = clock.now()) => {
    const k = `${gatewayId}/${deviceId}`;
    return drills.some((d) => d.devices.has(k) && ((d.startsAt <= at && at < d.endsAt) || (d.startsAt <= now && now < d.endsAt)));
  };
  const stagedDevices = (now: number) => new Set(drills.filter((d) => d.startsAt <= now && now < d.endsAt).flatMap((d) => [...d.devices]));
  await refreshDrills();

  // ---- delivery and linkage ----
  const linkage = createLinkage({ db, clock, log: log.child('linkage'), commands: opts.commands, linkage: opts.linkage });
  const delivery = opts.delivery
    ? createDelivery({
        db,
        clock,
        log: log.child('delivery'),
        delivery: opts.delivery,
        onDead: async (row: OutboxRow, reason: string) => {
          if (row.payload.alert.ruleId === DEAD_LETTER_RULE) return; // never loop on our own alert
          const a = row.payload.alert;
          await enqueue('urgent', () =>
            apply([
              {
                kind: 'raised',
                key: `${DEAD_LETTER_RULE}|${row.category}`,
                ruleId: DEAD_LETTER_RULE,
                ruleVersion: '1',
                title: { zh: `告警推送失败（${row.category === 'emergency' ? '应急处置' : '隐患排查'}模块）`, en: `Alert delivery to the ${row.category} module failing` },
                category: 'hazard',
                severity: row.category === 'emergency' ? 'critical' : 'major',
                gatewayId: a.gatewayId,
                deviceId: a.deviceId,
                orgPath: a.orgPath,
                value: null,
                eventType: null,
                at: clock.now(),
                drill: false,
                actions: [],
                escalateAfterMs: 30 * 60_000,
                reason: { zh: `告警 ${a.id} 的 ${row.transition} 推送失败：${reason}`, en: `delivery of ${row.transition} of alert ${a.id} failed: ${reason}` },
              },
            ]),
          );
        },
      })
    : null;
  const kickDelivery = () => {
    if (delivery && !stopped && opts.deliverOnChange !== false) void delivery.deliverDue().catch((e) => log.error('delivery run failed', { error: e }));
  };

  // ---- applying transitions: alert rows, history, outbox, notify and site state in one transaction ----
  let failed: AlertTransition[] = [];
  /** linkage runs after the alert is committed; stop() waits for them */
  const linking = new Set<Promise<unknown>>();
  async function saveState(tx: Queryable, site: string, now: number) {
    await tx.query(
      `insert into rule_state (site, state, updated_at) values ($1, $2::jsonb, ${ts(3)})
       on conflict (site) do update set state = excluded.state, updated_at = excluded.updated_at`,
      [site, engine.snapshotJson(site), now],
    );
  }

  async function applyOne(tx: Queryable, t: AlertTransition, now: number, linkTodo: { row: AlertRow; t: AlertTransition }[]) {
    const open = await getOpenByKey(tx, t.key);
    const actor = `rule:${t.ruleId}`;
    if (t.kind === 'raised' || t.kind === 'retriggered') {
      if (open) {
        if (t.kind === 'retriggered') return; // still open at the desk: the same alert
        // already open (e.g. state lost): a worse severity still counts
        if (severityRank(t.severity) > severityRank(open.severity)) {
          const row = await updateAlert(tx, open.id, { severity: t.severity, value: t.value }, now);
          await recordStep(tx, row, { action: 'worsened', actor, fromState: open.state, detail: { value: t.value, from: open.severity }, now, deliver: true });
        }
        return;
      }
      // retriggered with nothing open: the desk closed it where this engine could not see; a new hit is a new alert.
      // A drill only by its source: the record said so, or its device is staged (a drill started
      // by another process counts at once, not at our next tick).
      const drill = t.drill || (await stagedInDb(tx, t.gatewayId, t.deviceId, t.at, now));
      const row = await insertAlert(tx, { ...t, drill, raisedAt: t.at, escalateAfterMs: t.escalateAfterMs }, now);
      await recordStep(tx, row, { action: 'raised', actor, fromState: null, comment: null, detail: { value: t.value, eventType: t.eventType, reason: t.reason }, now, deliver: true });
      if (t.actions.length && t.category === 'emergency') linkTodo.push({ row, t });
      return;
    }
    if (!open) return; // nothing open (a person resolved it): nothing to do
    if (t.kind === 'worsened') {
      if (severityRank(t.severity) <= severityRank(open.severity)) return;
      const row = await updateAlert(tx, open.id, { severity: t.severity, value: t.value }, now);
      await recordStep(tx, row, { action: 'worsened', actor, fromState: open.state, detail: { value: t.value, from: open.severity }, now, deliver: true });
      return;
    }
    const row = await updateAlert(tx, open.id, { state: 'cleared', cleared_at: { at: t.at }, escalate_at: { at: null } }, now);
    await recordStep(tx, row, { action: 'cleared', actor, fromState: open.state, comment: null, detail: { value: t.value, reason: t.reason }, now, deliver: true });
  }

  async function apply(transitions: AlertTransition[]): Promise<void> {
    if (transitions.length === 0) return;
    const sites = new Set(transitions.map((t) => t.orgPath));
    const linkTodo: { row: AlertRow; t: AlertTransition }[] = [];
    let lastErr: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      linkTodo.length = 0;
      try {
        const now = clock.now();
        await db.transaction(async (tx) => {
          for (const t of transitions) await applyOne(tx, t, now, linkTodo);
          for (const s of sites) await saveState(tx, s, now);
        });
        for (const s of sites) dirtySites.delete(s);
        counters.transitions += transitions.length;
        for (const t of transitions) log.info(`alert ${t.kind}`, { rule: t.ruleId, device: `${t.gatewayId}/${t.deviceId}`, severity: t.severity, category: t.category, drill: t.drill });
        for (const { row, t } of linkTodo) {
          const run = linkage.run(row, t.actions).catch((e) => log.error('linkage failed', { error: e }));
          linking.add(run);
          void run.finally(() => linking.delete(run));
        }
        kickDelivery();
        return;
      } catch (e) {
        lastErr = e;
      }
    }
    // keep them: retried on the next tick, never dropped
    log.error('could not store alert transitions; will retry', { count: transitions.length, error: lastErr });
    failed.push(...transitions);
  }

  const note = (res: EngineResult, into: AlertTransition[]) => {
    for (const f of res.faults) {
      counters.faults++;
      log.child(`rule/${f.ruleId}`).error('rule evaluation failed', { error: f.message });
    }
    into.push(...res.transitions);
  };

  async function evaluate(batch: StoredBatch, what: 'events' | 'readings'): Promise<AlertTransition[]> {
    const site = batch.gateway.orgPath;
    const recs = what === 'events' ? batch.events : batch.readings;
    const devs = await devicesOf(batch.gateway.id, recs.map((r) => r.device));
    const gw = batch.gateway.id;
    const now = clock.now();
    const out: AlertTransition[] = [];
    if (what === 'events') {
      const evs = [...batch.events].sort((a: DeviceEvent, b: DeviceEvent) => (a.priority === b.priority ? a.ts - b.ts || a.seq - b.seq : a.priority === 'alarm' ? -1 : 1));
      for (const e of evs) note(engine.onEvent(e, { gatewayId: gw, orgPath: site, device: devs.get(e.device), drill: staged(gw, e.device, e.ts, now) }), out);
    } else {
      for (const r of batch.readings) note(engine.onReading(r, { gatewayId: gw, orgPath: site, device: devs.get(r.device), drill: staged(gw, r.device, r.ts, now) }), out);
    }
    counters.evaluated += recs.length;
    for (const s of engine.takeDirtySites()) dirtySites.add(s);
    return out;
  }

  const listener: BatchListener = {
    name: 'alerting',
    async onStored(batch) {
      if (stopped) throw new Error('alerting is stopped; the batch stays stored but is not evaluated here (告警模块已停止)');
      const jobs: Promise<void>[] = [];
      if (batch.events.length) jobs.push(enqueueBatch('urgent', batch, 'events'));
      if (batch.readings.length) jobs.push(enqueueBatch('bulk', batch, 'readings'));
      await Promise.all(jobs);
    },
    async onGatewayStatus(status: GatewayStatus & { orgPath: string }) {
      // device list or states changed: look again now rather than at the next cache expiry
      deviceCache.delete(status.gateway);
      // offline: raise now; back online: clear now (the store applied the status before telling us)
      await enqueue('urgent', () => absenceCheck(true));
    },
  };

  async function allDevices(): Promise<DeviceInfo[]> {
    const params: unknown[] = [];
    let where = '';
    if (opts.region) {
      params.push(opts.region);
      where = `where d.org_path = $1 or d.org_path like $1 || '/%'`;
    }
    const r = await db.query<{ gateway_id: string; device_id: string; org_path: string; profile: string; building: string | null; room: string | null; expected_interval_ms: number | null; state: string; last_seen: number | null }>(
      `select d.gateway_id, d.device_id, d.org_path, d.profile, d.building, d.room, d.expected_interval_ms,
              case when g.state = 'offline' then 'offline' else d.state end as state,
              (extract(epoch from d.last_seen) * 1000)::float8 as last_seen
         from devices d join gateways g on g.id = d.gateway_id ${where}`,
      params,
    );
    return r.rows.map((d) => ({ gatewayId: d.gateway_id, deviceId: d.device_id, orgPath: d.org_path, profile: d.profile, building: d.building, room: d.room, expectedIntervalMs: d.expected_interval_ms, state: d.state, lastSeen: d.last_seen === null ? null : Number(d.last_seen), watchedSince: startedAt }));
  }

  let lastAbsence = -Infinity;
  async function absenceCheck(force = false) {
    const now = clock.now();
    // silences are checked every few seconds (the device list is a query); durations on every tick
    const due = force || now - lastAbsence >= (opts.absenceEveryMs ?? 5000);
    if (due) lastAbsence = now;
    const devices = due ? await allDevices() : [];
    const out: AlertTransition[] = [];
    note(engine.onTick(now, devices, stagedDevices(now)), out);
    for (const s of engine.takeDirtySites()) dirtySites.add(s);
    await apply(out);
  }

  async function escalate() {
    const now = clock.now();
    await db.transaction(async (tx) => {
      const due = await tx.query<AlertRow>(
        `select ${ALERT_COLUMNS} from alerts where state = 'raised' and escalate_at <= ${ts(1)} order by escalate_at limit 100 for update skip locked`,
        [now],
      );
      for (const a of due.rows) {
        const next = nextTier(a.org_path, a.escalated_to);
        if (!next) {
          await tx.query(`update alerts set escalate_at = null where id = $1`, [a.id]);
          continue;
        }
        const after = a.escalate_after_ms ? Number(a.escalate_after_ms) : null;
        const furtherUp = nextTier(a.org_path, next);
        const row = await updateAlert(
          tx,
          a.id,
          { escalated_to: next, escalation_level: a.escalation_level + 1, escalate_at: { at: furtherUp && after ? now + after : null } },
          now,
        );
        await recordStep(tx, row, {
          action: 'escalated',
          actor: 'system',
          fromState: a.state,
          comment: `not acknowledged in time; escalated to ${next} / 超时未确认，已上报 ${next}`,
          detail: { to: next, level: row.escalation_level },
          now,
          deliver: true,
        });
        log.warn('alert escalated', { alert: a.id, to: next });
      }
    });
  }

  async function saveDirtyStates() {
    if (dirtySites.size === 0) return;
    const sites = [...dirtySites];
    dirtySites.clear();
    const now = clock.now();
    try {
      await db.transaction(async (tx) => {
        for (const s of sites) await saveState(tx, s, now);
      });
      lastStateSave = now;
    } catch (e) {
      for (const s of sites) dirtySites.add(s);
      log.error('saving rule state failed', { error: e });
    }
  }

  /** A drill's staged devices as `gateway/device`, each one a device of the drill's site. */
  async function stagedKeys(orgPath: string, devices: readonly string[]): Promise<string[]> {
    if (!Array.isArray(devices) || devices.length > 200) throw new AlertError('a drill stages at most 200 devices / 演练设备至多 200 个', 'invalid');
    const out: string[] = [];
    for (const name of devices) {
      if (typeof name !== 'string' || name.length === 0 || name.length > 200) throw new AlertError(`drill device "${String(name)}" is not a device name / 演练设备名无效`, 'invalid');
      const [gw, dev] = name.includes('/') ? [name.slice(0, name.indexOf('/')), name.slice(name.indexOf('/') + 1)] : [null, name];
      const r = await db.query<{ gateway_id: string; device_id: string }>(
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

  let ticking: Promise<void> | null = null;
  async function tick(): Promise<void> {
    if (ticking) return ticking;
    ticking = (async () => {
      const step = async (name: string, f: () => Promise<void>) => {
        try {
          await f();
        } catch (e) {
          log.child(name).error('tick step failed', { error: e });
        }
      };
      await step('drills', refreshDrills);
      if (failed.length) {
        const again = failed;
        failed = [];
        await step('retry', () => enqueue('urgent', () => apply(again)));
      }
      await step('absence', () => enqueue('urgent', absenceCheck));
      await step('escalation', () => enqueue('urgent', escalate));
      if (clock.now() - lastStateSave >= (opts.stateSaveMs ?? 5000)) await step('state', () => enqueue('bulk', saveDirtyStates));
      if (delivery) await step('delivery', async () => void (await delivery.deliverDue()));
    })();
    try {
      await ticking;
    } finally {
      ticking = null;
    }
  }

  let book: Rulebook | null = null;
  if (opts.rulebook) {
    book = await createRulebook({
      db,
      clock,
      log,
      dirs: opts.rulebook.dirs,
      library: opts.rulebook.library,
      watch: opts.rulebook.watch,
      onChange: (set) => {
        engine.setRules(set.rules, set.calendars);
        log.info('rules reloaded', { rules: set.rules.length, errors: set.errors.length });
      },
    });
  }

  const tickMs = opts.tickMs ?? 1000;
  const timer = tickMs > 0 ? clock.setInterval(() => void tick().catch(() => {}), tickMs) : null;

  /**
   * The desk's step on the latch, saved in the alert's own transaction. Only this key's state is
   * written: a process that serves the desk but evaluates nothing must not overwrite the site's
   * state that an ingest worker keeps.
   */
  async function personStep(tx: Queryable, key: string, event: 'ack' | 'resolve', now: number) {
    const site = engine.person(key, event, now);
    if (site === null) return;
    const st = engine.snapshot(site).states[key];
    if (!st) return;
    await tx.query(
      `insert into rule_state (site, state, updated_at) values ($1, jsonb_build_object('v', 1, 'states', jsonb_build_object($2::text, $3::jsonb), 'seen', '{}'::jsonb), ${ts(4)})
       on conflict (site) do update set state = jsonb_set(rule_state.state, array['states', $2::text], $3::jsonb, true), updated_at = excluded.updated_at`,
      [site, key, JSON.stringify(st), now],
    );
  }

  const mutate = async (scope: Scope, id: string, f: (tx: Queryable, a: AlertRow, now: number) => Promise<AlertRow>): Promise<AlertView> => {
    let out: AlertRow | null = null;
    await enqueue('urgent', async () => {
      const now = clock.now();
      out = await db.transaction(async (tx) => {
        const a = await getById(tx, id, scope, true);
        if (!a) throw new AlertError(`alert ${id} not found in your scope / 告警不存在或不在权限范围内`, 'not_found');
        return f(tx, a, now);
      });
    });
    kickDelivery();
    return toView(out!);
  };

  return {
    listener,
    tick,
    list: (scope, filter) => listAlerts(db, scope, filter),
    async get(scope, id) {
      const r = await getById(db, id, scope);
      return r ? toView(r) : null;
    },
    history: (scope, id) => alertHistory(db, scope, id),
    async actions(scope, id) {
      if (!(await getById(db, id, scope))) throw new AlertError(`alert ${id} not found in your scope`, 'not_found');
      const r = await db.query<{ id: number; at: number; action: string; gateway_id: string | null; device_id: string | null; ok: boolean; detail: string }>(
        `select id::float8 as id, (extract(epoch from at) * 1000)::float8 as at, action, gateway_id, device_id, ok, detail from alert_actions where alert_id = $1 order by id`,
        [id],
      );
      return r.rows.map((x) => ({ id: Number(x.id), at: Math.round(Number(x.at)), action: x.action, gatewayId: x.gateway_id, deviceId: x.device_id, ok: x.ok, detail: x.detail }));
    },
    async attachments(scope, id) {
      if (!(await getById(db, id, scope))) throw new AlertError(`alert ${id} not found in your scope`, 'not_found');
      const r = await db.query<{ id: number; kind: string; mime: string; device_id: string | null; created_at: number; data: Uint8Array }>(
        `select id::float8 as id, kind, mime, device_id, (extract(epoch from created_at) * 1000)::float8 as created_at, data from alert_attachments where alert_id = $1 order by id`,
        [id],
      );
      return r.rows.map((x) => ({ id: Number(x.id), kind: x.kind, mime: x.mime, deviceId: x.device_id, createdAt: Math.round(Number(x.created_at)), data: Buffer.from(x.data) }));
    },
    acknowledge(scope, id, user, comment) {
      const who = ensureUser(user);
      const text = ensureComment(comment);
      return mutate(scope, id, async (tx, a, now) => {
        if (a.state !== 'raised') throw new AlertError(`alert ${id} is ${a.state}; only a raised alert can be acknowledged / 仅"已触发"的告警可确认`, 'conflict');
        const row = await updateAlert(tx, a.id, { state: 'acknowledged', acknowledged_at: { at: now }, acknowledged_by: who, ack_comment: text, escalate_at: { at: null } }, now);
        await recordStep(tx, row, { action: 'acknowledged', actor: who, fromState: a.state, comment: text, now, deliver: true });
        await personStep(tx, a.dedup_key, 'ack', now);
        return row;
      });
    },
    resolve(scope, id, user, comment) {
      const who = ensureUser(user);
      const text = ensureComment(comment);
      return mutate(scope, id, async (tx, a, now) => {
        if (a.state !== 'raised' && a.state !== 'acknowledged') throw new AlertError(`alert ${id} is already ${a.state} / 告警已关闭`, 'conflict');
        const row = await updateAlert(tx, a.id, { state: 'resolved', resolved_at: { at: now }, resolved_by: who, resolve_comment: text, escalate_at: { at: null } }, now);
        await recordStep(tx, row, { action: 'resolved', actor: who, fromState: a.state, comment: text, now, deliver: true });
        // the rule's latch for this subject re-arms (a rule that never clears) or waits for its clear
        await personStep(tx, a.dedup_key, 'resolve', now);
        return row;
      });
    },
    async startDrill(scope, orgPath, minutes, user, devices = []) {
      const who = ensureUser(user);
      try {
        parseOrgPath(orgPath);
      } catch (e) {
        throw new AlertError((e as Error).message, 'invalid');
      }
      if (!inScope(scope.orgPath, orgPath)) throw new AlertError(`${orgPath} is outside your scope ${scope.orgPath} / 超出权限范围`, 'forbidden');
      if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 24 * 60) throw new AlertError('a drill lasts between 1 minute and 24 hours / 演练时长须在 1 分钟到 24 小时之间', 'invalid');
      const stagedList = await stagedKeys(orgPath, devices);
      const now = clock.now();
      const r = await db.query<{ id: number }>(
        `insert into drills (org_path, starts_at, ends_at, started_by, devices) values ($1, ${ts(2)}, to_timestamp(($2::float8 + $3::float8) / 1000), $4, $5::text[]) returning id::float8 as id`,
        [orgPath, now, minutes * 60_000, who, stagedList],
      );
      await refreshDrills();
      log.info('drill started', { orgPath, minutes, by: who, devices: stagedList });
      return { id: Number(r.rows[0]!.id), orgPath, devices: stagedList, startsAt: now, endsAt: now + minutes * 60_000, startedBy: who };
    },
    async activeDrills(scope) {
      const params: unknown[] = [clock.now()];
      const r = await db.query<{ id: number; org_path: string; starts_at: number; ends_at: number; started_by: string; devices: string[] }>(
        `select id::float8 as id, org_path, (extract(epoch from starts_at) * 1000)::float8 as starts_at, (extract(epoch from ends_at) * 1000)::float8 as ends_at, started_by, devices
           from drills where ends_at > ${ts(1)} and ${scopeSql(scope, 'org_path', params)} order by starts_at`,
        params,
      );
      return r.rows.map((d) => ({ id: Number(d.id), orgPath: d.org_path, devices: d.devices ?? [], startsAt: Math.round(Number(d.starts_at)), endsAt: Math.round(Number(d.ends_at)), startedBy: d.started_by }));
    },
    setRules(next) {
      const s = ruleSet(next);
      engine.setRules(s.rules, s.calendars);
      log.info('rules reloaded', { rules: s.rules.length });
    },
    rules: () => engine.rules(),
    rulebook: book,
    deliver: async () => (delivery ? delivery.deliverDue() : 0),
    stats: () => ({ ...counters, delivery: delivery?.stats() ?? null, queued: urgent.length + bulk.length }),
    async stop() {
      if (stopped) return;
      stopped = true;
      if (timer !== null) clock.clearInterval(timer);
      while (pumping) await pumping;
      if (ticking) await ticking.catch(() => {});
      await delivery?.idle();
      await Promise.all([...linking]);
      await saveDirtyStates();
      await book?.close();
    },
  };
}
