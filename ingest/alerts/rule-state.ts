// Rule state per site (`rule_state`): saved with the alerts it changes (same transaction, see
// transitions.ts), and for sites whose state changed without an alert every `stateSaveMs`.
// What the engine persists there — latches, windows and the highest seq it evaluated per series —
// is what makes a redelivered record harmless after a crash (ingest/README.md "Rules on arrival").
import type { Clock, Logger } from '../../contract/index.ts';
import type { RuleEngine } from '../../rules/index.ts';
import type { Db, Queryable } from '../db.ts';
import { ts } from './store.ts';

export class RuleStateStore {
  readonly dirty = new Set<string>();
  lastSave: number;
  constructor(private readonly db: Db, private readonly engine: RuleEngine, private readonly clock: Clock, private readonly log: Logger) {
    this.lastSave = clock.now();
  }

  /** sites the engine changed since the last call */
  noteEngine(): void {
    for (const s of this.engine.takeDirtySites()) this.dirty.add(s);
  }

  async save(tx: Queryable, site: string, now: number): Promise<void> {
    await tx.query(
      `insert into rule_state (site, state, updated_at) values ($1, $2::jsonb, ${ts(3)})
       on conflict (site) do update set state = excluded.state, updated_at = excluded.updated_at`,
      [site, this.engine.snapshotJson(site), now],
    );
  }

  /** after the commit that saved them */
  saved(sites: Iterable<string>): void {
    for (const s of sites) this.dirty.delete(s);
  }

  /**
   * Snapshots of up to `max` changed sites, taken where the work queue has committed everything
   * evaluated before (so a snapshot is never ahead of its alerts). Synchronous and about 1 ms a
   * site; the sites leave the dirty set now and come back if their write fails.
   */
  takeSnapshots(max = Infinity): { at: number; sites: Array<{ site: string; json: string }> } {
    const at = this.clock.now();
    const sites: Array<{ site: string; json: string }> = [];
    for (const site of this.dirty) {
      if (sites.length >= max) break;
      sites.push({ site, json: this.engine.snapshotJson(site) });
    }
    for (const s of sites) this.dirty.delete(s.site);
    return { at, sites };
  }

  /**
   * Write snapshots taken by takeSnapshots(), outside the work queue: alerts and evaluation go on
   * meanwhile. A row saved since (with a newer alert commit) is never overwritten by an older
   * snapshot: the write only replaces an older `updated_at`.
   */
  async writeSnapshots(s: { at: number; sites: Array<{ site: string; json: string }> }): Promise<void> {
    if (s.sites.length === 0) return;
    try {
      await this.db.transaction(async (tx) => {
        for (const { site, json } of s.sites) {
          await tx.query(
            `insert into rule_state (site, state, updated_at) values ($1, $2::jsonb, ${ts(3)})
             on conflict (site) do update set state = excluded.state, updated_at = excluded.updated_at
             where rule_state.updated_at < excluded.updated_at`,
            [site, json, s.at],
          );
        }
      });
      this.lastSave = s.at;
    } catch (e) {
      for (const { site } of s.sites) this.dirty.add(site);
      this.log.error('saving rule state failed; retried at the next save', { error: e });
    }
  }

  /** every changed site, snapshot and write at once (on stop, when nothing else runs) */
  async saveDirty(): Promise<void> {
    await this.writeSnapshots(this.takeSnapshots());
  }

  /**
   * The desk's step on the latch, saved in the alert's own transaction. Only this key's state is
   * written: a process that serves the desk but evaluates nothing must not overwrite the site's
   * state that an ingest worker keeps.
   */
  async personStep(tx: Queryable, key: string, event: 'ack' | 'resolve', now: number): Promise<void> {
    const site = this.engine.person(key, event, now);
    if (site === null) return;
    const st = this.engine.snapshot(site).states[key];
    if (!st) return;
    await tx.query(
      `insert into rule_state (site, state, updated_at) values ($1, jsonb_build_object('v', 1, 'states', jsonb_build_object($2::text, $3::jsonb), 'seen', '{}'::jsonb), ${ts(4)})
       on conflict (site) do update set state = jsonb_set(rule_state.state, array['states', $2::text], $3::jsonb, true), updated_at = excluded.updated_at`,
      [site, key, JSON.stringify(st), now],
    );
  }
}
