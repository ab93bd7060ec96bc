// The alerting tier: feeds arrived batches to the rule engine, persists what it says (one open
// alert per rule and device), runs the lifecycle (raised → acknowledged → resolved / cleared,
// escalation when nobody acknowledges), drills, linkage and delivery to the provincial modules.
//
// This file composes the units beside it, each with one job:
//   work-queue.ts   two-lane serial work (emergencies first), batch promises resolve on commit
//   evaluator.ts    records and ticks → rule engine → transitions
//   transitions.ts  alert rows + history + outbox + rule state in one transaction; retries
//   rule-state.ts   rule_state saves (with the alerts; dirty sites periodically; desk steps)
//   devices.ts      devices as the rules see them (cached)
//   drills.ts       drill registry (by source: staged devices)
//   escalation.ts   escalation ladder and its run
//   desk.ts         acknowledge / resolve
//   ticker.ts       time-based steps, each its own fault unit
//   delivery.ts, linkage.ts, rulebook.ts: outbox delivery, linkage actions, change control
// Ordering with the ingest receipt: ingest/README.md "Rules on arrival".
import { silentLogger, systemClock, type Clock, type GatewayStatus, type Logger } from '../../contract/index.ts';
import { createRuleEngine, type AlertTransition, type CompiledCalendar, type CompiledRule, type RuleEngine, type RuleSet, type EngineSnapshot } from '../../rules/index.ts';
import type { Db } from '../db.ts';
import type { Scope } from '../scope.ts';
import type { ArrivedBatch, BatchListener, CommandSender } from '../types.ts';
import { createDelivery, type DeliveryOptions, type DeliveryStats, type OutboxRow } from './delivery.ts';
import { AlertDesk, ensureUser } from './desk.ts';
import { DeviceDirectory } from './devices.ts';
import { DrillRegistry, type DrillInfo } from './drills.ts';
import { Escalator } from './escalation.ts';
import { RuleEvaluator } from './evaluator.ts';
import { createLinkage, type LinkageOptions } from './linkage.ts';
import { RuleStateStore } from './rule-state.ts';
import { createRulebook, type Rulebook } from './rulebook.ts';
import { alertHistory, AlertError, getById, listAlerts, toView, type AlertFilter, type AlertView, type HistoryEntry } from './store.ts';
import { Ticker } from './ticker.ts';
import { TransitionWriter } from './transitions.ts';
import { WorkQueue } from './work-queue.ts';

export { nextTier } from './escalation.ts';
export type { DrillInfo } from './drills.ts';

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

type RulesInput = AlertingOptions['rules'];
const ruleSetOf = (r: RulesInput, calendars: readonly CompiledCalendar[] = []) =>
  Array.isArray(r) ? { rules: r as CompiledRule[], calendars } : { rules: (r as RuleSet).rules, calendars: (r as RuleSet).calendars ?? calendars };

/** The engine with the region's rule state restored, its latches reconciled with the open alerts. */
async function restoreEngine(opts: AlertingOptions, log: Logger): Promise<RuleEngine> {
  const initial = ruleSetOf(opts.rules, opts.calendars);
  const inRegion = (col: string) => (opts.region ? ` ${col} = $1 or ${col} like $1 || '/%'` : ' true');
  const params = opts.region ? [opts.region] : [];
  const states = await opts.db.query<{ site: string; state: EngineSnapshot | string }>(`select site, state from rule_state where${inRegion('site')}`, params);
  const saved = states.rows.map((r) => ({ site: r.site, state: (typeof r.state === 'string' ? JSON.parse(r.state) : r.state) as EngineSnapshot }));
  // the engine's per-series seq guard (rules/seq-guard.ts) travels in the same state: a record
  // redelivered after a crash (its alert committed, its receipt not sent) evaluates to nothing
  const engine = createRuleEngine(initial.rules, { calendars: initial.calendars, state: saved.map((s) => s.state) });
  // The store is the desk's truth: a latch that believes its alert open when none is (resolved by
  // another process, or before latches were kept) is resolved, so the next hit raises again.
  const openNow = await opts.db.query<{ dedup_key: string; state: 'raised' | 'acknowledged' }>(
    `select dedup_key, state from alerts where state in ('raised', 'acknowledged') and (${inRegion('org_path')})`,
    params,
  );
  const reconciled = engine.reconcile(new Map(openNow.rows.map((r) => [r.dedup_key, r.state])));
  log.info('alerting started', { rules: initial.rules.length, sitesRestored: states.rows.length, latchesReconciled: reconciled.length });
  return engine;
}

/** The hazard alert raised when delivery of an alert to a provincial module keeps failing. */
function deliveryFailed(row: OutboxRow, reason: string, now: number): AlertTransition {
  const a = row.payload.alert;
  return {
    kind: 'raised',
    key: `${DEAD_LETTER_RULE}|${row.category}`,
    ruleId: DEAD_LETTER_RULE,
    ruleVersion: '1',
    title: { zh: `告警推送失败（${row.category === 'emergency' ? '应急处置' : '隐患排查'}模块）`, en: `Alert delivery to the ${row.category} module failing` },
    category: 'hazard',
    severity: row.category === 'emergency' ? 'critical' : 'major',
    gatewayId: a.gatewayId, deviceId: a.deviceId, orgPath: a.orgPath,
    value: null, eventType: null, at: now, drill: false, actions: [],
    escalateAfterMs: 30 * 60_000,
    reason: { zh: `告警 ${a.id} 的 ${row.transition} 推送失败：${reason}`, en: `delivery of ${row.transition} of alert ${a.id} failed: ${reason}` },
  };
}

/** Linkage runs after the alert is committed, each its own fault unit; `idle()` waits for them. */
class LinkageRuns {
  private running = new Set<Promise<unknown>>();
  constructor(private readonly linkage: ReturnType<typeof createLinkage>, private readonly log: Logger) {}
  start(row: Parameters<ReturnType<typeof createLinkage>['run']>[0], t: AlertTransition): void {
    const run = this.linkage.run(row, t.actions).catch((e) => this.log.error('linkage failed', { error: e }));
    this.running.add(run);
    void run.finally(() => this.running.delete(run));
  }
  idle(): Promise<unknown> {
    return Promise.all([...this.running]);
  }
}

export async function createAlerting(opts: AlertingOptions): Promise<Alerting> {
  const { db } = opts;
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? silentLogger;
  let stopped = false;
  const engine = await restoreEngine(opts, log);
  const state = new RuleStateStore(db, engine, clock, log);
  const drills = new DrillRegistry(db, clock, log);
  await drills.refresh();
  const devices = new DeviceDirectory(db, clock, opts.region);
  const evaluator = new RuleEvaluator(engine, devices, drills, state, clock, log, clock.now(), opts.absenceEveryMs);
  const linking = new LinkageRuns(createLinkage({ db, clock, log: log.child('linkage'), commands: opts.commands, linkage: opts.linkage }), log);
  // assigned below; the writer's callbacks run only after a commit
  let kickDelivery = () => {};
  const writer = new TransitionWriter({ db, clock, log, drills, state, linked: (row, t) => linking.start(row, t), committed: () => kickDelivery() });
  const queue = new WorkQueue({ evaluate: (b, what) => evaluator.batch(b, what), apply: (ts, done) => writer.apply(ts, done) });
  const delivery = opts.delivery
    ? createDelivery({
        db, clock, log: log.child('delivery'), delivery: opts.delivery,
        onDead: async (row: OutboxRow, reason: string) => {
          if (row.payload.alert.ruleId === DEAD_LETTER_RULE) return; // never loop on our own alert
          await queue.task('urgent', () => writer.apply([deliveryFailed(row, reason, clock.now())]));
        },
      })
    : null;
  kickDelivery = () => {
    if (delivery && !stopped && opts.deliverOnChange !== false) void delivery.deliverDue().catch((e) => log.error('delivery run failed', { error: e }));
  };
  const ticker = timeSteps({ opts, clock, log, drills, writer, queue, evaluator, state, delivery, escalator: new Escalator(db, clock, log) });
  const desk = new AlertDesk(db, clock, queue, state, () => kickDelivery());

  // Arrival (or, for callers that hand batches in by hand, after storage): events in the urgent
  // lane, readings in the bulk lane; resolves once the transitions they caused are committed.
  const evaluate = async (batch: ArrivedBatch) => {
    if (stopped) throw new Error('alerting is stopped; the batch is not evaluated here (告警模块已停止)');
    const jobs: Promise<void>[] = [];
    if (batch.events.length) jobs.push(queue.batch('urgent', batch, 'events'));
    if (batch.readings.length) jobs.push(queue.batch('bulk', batch, 'readings'));
    await Promise.all(jobs);
  };
  const listener: BatchListener = {
    name: 'alerting',
    onArrival: evaluate,
    onStored: evaluate,
    async onGatewayStatus(status: GatewayStatus & { orgPath: string }) {
      devices.forget(status.gateway);
      // offline: raise now; back online: clear now (the store applied the status before telling us)
      await queue.task('urgent', async () => writer.apply(await evaluator.tick(true)));
    },
  };
  const book = opts.rulebook ? await openRulebook(opts, engine, clock, log) : null;
  ticker.start(opts.tickMs ?? 1000);
  return {
    listener,
    tick: () => ticker.tick(),
    ...readers(db),
    acknowledge: (scope, id, user, comment) => desk.acknowledge(scope, id, user, comment),
    resolve: (scope, id, user, comment) => desk.resolve(scope, id, user, comment),
    startDrill: (scope, orgPath, minutes, user, list = []) => drills.start(scope, orgPath, minutes, ensureUser(user), list),
    activeDrills: (scope) => drills.active(scope),
    setRules(next) {
      const s = ruleSetOf(next, opts.calendars);
      engine.setRules(s.rules, s.calendars);
      log.info('rules reloaded', { rules: s.rules.length });
    },
    rules: () => engine.rules(),
    rulebook: book,
    deliver: async () => (delivery ? delivery.deliverDue() : 0),
    stats: () => ({ evaluated: evaluator.evaluated, transitions: writer.transitions, faults: evaluator.faults, delivery: delivery?.stats() ?? null, queued: queue.size }),
    async stop() {
      if (stopped) return;
      stopped = true;
      await ticker.stop();
      await queue.idle();
      await delivery?.idle();
      await linking.idle();
      await state.saveDirty();
      await book?.close();
    },
  };
}

const STATE_SLICE = 10;

async function saveInSlices(queue: WorkQueue, state: RuleStateStore): Promise<void> {
  for (let left = state.dirty.size; left > 0; left -= STATE_SLICE) {
    let snaps: ReturnType<RuleStateStore['takeSnapshots']> | null = null;
    await queue.task('bulk', async () => void (snaps = state.takeSnapshots(STATE_SLICE)));
    if (!snaps || (snaps as { sites: unknown[] }).sites.length === 0) return;
    await state.writeSnapshots(snaps);
  }
}

/** The tick's steps in their order, each its own fault unit (ticker.ts). */
function timeSteps(d: {
  opts: AlertingOptions; clock: Clock; log: Logger; drills: DrillRegistry; writer: TransitionWriter; queue: WorkQueue;
  evaluator: RuleEvaluator; state: RuleStateStore; delivery: ReturnType<typeof createDelivery> | null; escalator: Escalator;
}): Ticker {
  const { clock, writer, queue, state, delivery } = d;
  return new Ticker([
    { name: 'drills', run: () => d.drills.refresh() },
    { name: 'retry', due: () => writer.waiting > 0, run: () => queue.task('urgent', () => writer.retryParked()) },
    { name: 'absence', run: () => queue.task('urgent', async () => writer.apply(await d.evaluator.tick())) },
    { name: 'escalation', run: () => queue.task('urgent', () => d.escalator.run()) },
    // never while transitions wait for a retry: the saved state must not run ahead of the alerts
    // Snapshots are taken in the queue, a few sites at a time, and written outside it: a save of
    // many sites (about 20 ms a site on a busy PostgreSQL) never holds up the evaluation of an alarm.
    { name: 'state', due: () => writer.waiting === 0 && clock.now() - state.lastSave >= (d.opts.stateSaveMs ?? 5000), run: () => saveInSlices(queue, state) },
    { name: 'delivery', due: () => delivery !== null, run: async () => void (await delivery!.deliverDue()) },
  ], clock, d.log);
}

/** Change control: the rulebook reloads the engine on every change (rule_versions, folder edits). */
function openRulebook(opts: AlertingOptions, engine: RuleEngine, clock: Clock, log: Logger): Promise<Rulebook> {
  const rb = opts.rulebook!;
  return createRulebook({
    db: opts.db, clock, log, dirs: rb.dirs, library: rb.library, watch: rb.watch,
    onChange: (set) => {
      engine.setRules(set.rules, set.calendars);
      log.info('rules reloaded', { rules: set.rules.length, errors: set.errors.length });
    },
  });
}

/** The desk's reads, each scoped. */
function readers(db: Db): Pick<Alerting, 'list' | 'get' | 'history' | 'actions' | 'attachments'> {
  const mustSee = async (scope: Scope, id: string) => {
    if (!(await getById(db, id, scope))) throw new AlertError(`alert ${id} not found in your scope`, 'not_found');
  };
  return {
    list: (scope, filter) => listAlerts(db, scope, filter),
    async get(scope, id) {
      const r = await getById(db, id, scope);
      return r ? toView(r) : null;
    },
    history: (scope, id) => alertHistory(db, scope, id),
    async actions(scope, id) {
      await mustSee(scope, id);
      const r = await db.query<{ id: number; at: number; action: string; gateway_id: string | null; device_id: string | null; ok: boolean; detail: string }>(
        `select id::float8 as id, (extract(epoch from at) * 1000)::float8 as at, action, gateway_id, device_id, ok, detail from alert_actions where alert_id = $1 order by id`,
        [id],
      );
      return r.rows.map((x) => ({ id: Number(x.id), at: Math.round(Number(x.at)), action: x.action, gatewayId: x.gateway_id, deviceId: x.device_id, ok: x.ok, detail: x.detail }));
    },
    async attachments(scope, id) {
      await mustSee(scope, id);
      const r = await db.query<{ id: number; kind: string; mime: string; device_id: string | null; created_at: number; data: Uint8Array }>(
        `select id::float8 as id, kind, mime, device_id, (extract(epoch from created_at) * 1000)::float8 as created_at, data from alert_attachments where alert_id = $1 order by id`,
        [id],
      );
      return r.rows.map((x) => ({ id: Number(x.id), kind: x.kind, mime: x.mime, deviceId: x.device_id, createdAt: Math.round(Number(x.created_at)), data: Buffer.from(x.data) }));
    },
  };
}
