// The alert transition writer: what the engine says becomes alert rows, their history, outbox rows
// (delivery) and the rule state of their sites, all in ONE transaction (DESIGN "Alerts"; ingest/
// README.md "Rules on arrival"). The latches and seq guard saved with the alert are why a record
// redelivered after this commit raises nothing twice. What cannot be committed now is kept and
// retried on the next tick, never dropped; its batches are not receipted until it is.
import { severityRank, type Clock, type Logger } from '../../contract/index.ts';
import type { AlertTransition } from '../../rules/index.ts';
import type { Db, Queryable } from '../db.ts';
import { crashPoint } from '../worker/crash-points.ts';
import type { DrillRegistry } from './drills.ts';
import type { RuleStateStore } from './rule-state.ts';
import { getOpenByKey, insertAlert, recordStep, updateAlert, type AlertRow } from './store.ts';

export interface TransitionWriterDeps {
  db: Db;
  clock: Clock;
  log: Logger;
  drills: DrillRegistry;
  state: RuleStateStore;
  /** after the commit: linkage of a raised emergency */
  linked(row: AlertRow, t: AlertTransition): void;
  /** after the commit: a delivery run */
  committed(): void;
}

interface Parked {
  transitions: AlertTransition[];
  done: () => void;
}

export class TransitionWriter {
  transitions = 0;
  private parked: Parked[] = [];
  constructor(private readonly d: TransitionWriterDeps) {}

  get waiting(): number {
    return this.parked.length;
  }

  /** Commits `transitions` (3 attempts); `done` runs once they are committed, now or on a retry. */
  async apply(fresh: AlertTransition[], fresher: () => void = () => {}): Promise<void> {
    if (fresh.length === 0 && this.parked.length === 0) return fresher();
    // What waits for a retry goes first, in this same commit: the rule state saved with it has
    // evaluated those records too, and must never be committed without their alerts.
    const parked = this.parked;
    this.parked = [];
    const transitions = [...parked.flatMap((p) => p.transitions), ...fresh];
    const done = () => {
      for (const p of parked) p.done();
      fresher();
    };
    let lastErr: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await this.commit(transitions);
        return done();
      } catch (e) {
        lastErr = e;
      }
    }
    // keep them: retried on the next tick, never dropped
    this.d.log.error('could not store alert transitions; will retry', { count: transitions.length, error: lastErr });
    this.parked.push({ transitions, done });
  }

  /** The tick's retry of what could not be committed before. */
  retryParked(): Promise<void> {
    return this.apply([]);
  }

  private async commit(transitions: AlertTransition[]): Promise<void> {
    const sites = new Set(transitions.map((t) => t.orgPath));
    const linkTodo: { row: AlertRow; t: AlertTransition }[] = [];
    const now = this.d.clock.now();
    await this.d.db.transaction(async (tx) => {
      for (const t of transitions) await this.applyOne(tx, t, now, linkTodo);
      for (const s of sites) await this.d.state.save(tx, s, now);
    });
    crashPoint('after-alert-commit');
    this.d.state.saved(sites);
    this.transitions += transitions.length;
    for (const t of transitions) this.d.log.info(`alert ${t.kind}`, { rule: t.ruleId, device: `${t.gatewayId}/${t.deviceId}`, severity: t.severity, category: t.category, drill: t.drill });
    for (const { row, t } of linkTodo) this.d.linked(row, t);
    this.d.committed();
  }

  private async applyOne(tx: Queryable, t: AlertTransition, now: number, linkTodo: { row: AlertRow; t: AlertTransition }[]): Promise<void> {
    const open = await getOpenByKey(tx, t.key);
    if (t.kind === 'raised' || t.kind === 'retriggered') {
      if (open) {
        // retriggered: still open at the desk, the same alert; raised while open (state lost): a worse severity still counts
        if (t.kind === 'raised') await this.worsen(tx, open, t, now);
        return;
      }
      // retriggered with nothing open: the desk closed it where this engine could not see; a new hit is a new alert.
      // A drill only by its source: the record said so, or its device is staged (a drill started
      // by another process counts at once, not at our next tick).
      const drill = t.drill || (await this.d.drills.stagedInDb(tx, t.gatewayId, t.deviceId, t.at, now));
      const row = await insertAlert(tx, { ...t, drill, raisedAt: t.at, escalateAfterMs: t.escalateAfterMs }, now);
      await recordStep(tx, row, { action: 'raised', actor: `rule:${t.ruleId}`, fromState: null, comment: null, detail: { value: t.value, eventType: t.eventType, reason: t.reason }, now, deliver: true });
      if (t.actions.length && t.category === 'emergency') linkTodo.push({ row, t });
      return;
    }
    if (!open) return; // nothing open (a person resolved it): nothing to do
    if (t.kind === 'worsened') return this.worsen(tx, open, t, now);
    const row = await updateAlert(tx, open.id, { state: 'cleared', cleared_at: { at: t.at }, escalate_at: { at: null } }, now);
    await recordStep(tx, row, { action: 'cleared', actor: `rule:${t.ruleId}`, fromState: open.state, comment: null, detail: { value: t.value, reason: t.reason }, now, deliver: true });
  }

  private async worsen(tx: Queryable, open: AlertRow, t: AlertTransition, now: number): Promise<void> {
    if (severityRank(t.severity) <= severityRank(open.severity)) return;
    const row = await updateAlert(tx, open.id, { severity: t.severity, value: t.value }, now);
    await recordStep(tx, row, { action: 'worsened', actor: `rule:${t.ruleId}`, fromState: open.state, detail: { value: t.value, from: open.severity }, now, deliver: true });
  }
}
