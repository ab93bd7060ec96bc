// The security desk's steps on an alert (raised → acknowledged → resolved), each in its own
// transaction with its history, outbox row and the rule latch it moves; in the urgent lane of the
// work queue so a step never races the evaluation of the same alert.
import type { Clock } from '../../contract/index.ts';
import type { Db, Queryable } from '../db.ts';
import type { Scope } from '../scope.ts';
import type { RuleStateStore } from './rule-state.ts';
import { AlertError, getById, recordStep, toView, updateAlert, type AlertRow, type AlertView } from './store.ts';
import type { WorkQueue } from './work-queue.ts';

export function ensureUser(user: string): string {
  if (typeof user !== 'string' || user.trim() === '' || user.length > 128) throw new AlertError('user must be a non-empty name of at most 128 characters / 须给出操作人', 'invalid');
  return user.trim();
}

function ensureComment(comment: string | undefined): string | null {
  if (comment === undefined || comment === null) return null;
  if (typeof comment !== 'string' || comment.length > 2000) throw new AlertError('comment must be text of at most 2000 characters / 备注过长', 'invalid');
  return comment.trim() || null;
}

export class AlertDesk {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly queue: WorkQueue,
    private readonly state: RuleStateStore,
    private readonly changed: () => void,
  ) {}

  acknowledge(scope: Scope, id: string, user: string, comment?: string): Promise<AlertView> {
    const who = ensureUser(user);
    const text = ensureComment(comment);
    return this.mutate(scope, id, async (tx, a, now) => {
      if (a.state !== 'raised') throw new AlertError(`alert ${id} is ${a.state}; only a raised alert can be acknowledged / 仅"已触发"的告警可确认`, 'conflict');
      const row = await updateAlert(tx, a.id, { state: 'acknowledged', acknowledged_at: { at: now }, acknowledged_by: who, ack_comment: text, escalate_at: { at: null } }, now);
      await recordStep(tx, row, { action: 'acknowledged', actor: who, fromState: a.state, comment: text, now, deliver: true });
      await this.state.personStep(tx, a.dedup_key, 'ack', now);
      return row;
    });
  }

  resolve(scope: Scope, id: string, user: string, comment?: string): Promise<AlertView> {
    const who = ensureUser(user);
    const text = ensureComment(comment);
    return this.mutate(scope, id, async (tx, a, now) => {
      if (a.state !== 'raised' && a.state !== 'acknowledged') throw new AlertError(`alert ${id} is already ${a.state} / 告警已关闭`, 'conflict');
      const row = await updateAlert(tx, a.id, { state: 'resolved', resolved_at: { at: now }, resolved_by: who, resolve_comment: text, escalate_at: { at: null } }, now);
      await recordStep(tx, row, { action: 'resolved', actor: who, fromState: a.state, comment: text, now, deliver: true });
      // the rule's latch for this subject re-arms (a rule that never clears) or waits for its clear
      await this.state.personStep(tx, a.dedup_key, 'resolve', now);
      return row;
    });
  }

  private async mutate(scope: Scope, id: string, f: (tx: Queryable, a: AlertRow, now: number) => Promise<AlertRow>): Promise<AlertView> {
    let out: AlertRow | null = null;
    await this.queue.task('urgent', async () => {
      const now = this.clock.now();
      out = await this.db.transaction(async (tx) => {
        const a = await getById(tx, id, scope, true);
        if (!a) throw new AlertError(`alert ${id} not found in your scope / 告警不存在或不在权限范围内`, 'not_found');
        return f(tx, a, now);
      });
    });
    this.changed();
    return toView(out!);
  }
}
