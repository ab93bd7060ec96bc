// Escalation when nobody acknowledges: school → county → city (a college → university → province).
// One transaction per run over the alerts due, `skip locked` so several workers share the work.
import { parseOrgPath, type Clock, type Logger } from '../../contract/index.ts';
import type { Db } from '../db.ts';
import { ALERT_COLUMNS, recordStep, ts, updateAlert, type AlertRow } from './store.ts';

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

export class Escalator {
  constructor(private readonly db: Db, private readonly clock: Clock, private readonly log: Logger) {}

  async run(): Promise<void> {
    const now = this.clock.now();
    await this.db.transaction(async (tx) => {
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
        const row = await updateAlert(tx, a.id, { escalated_to: next, escalation_level: a.escalation_level + 1, escalate_at: { at: furtherUp && after ? now + after : null } }, now);
        await recordStep(tx, row, {
          action: 'escalated', actor: 'system', fromState: a.state, now, deliver: true,
          comment: `not acknowledged in time; escalated to ${next} / 超时未确认，已上报 ${next}`,
          detail: { to: next, level: row.escalation_level },
        });
        this.log.warn('alert escalated', { alert: a.id, to: next });
      }
    });
  }
}
