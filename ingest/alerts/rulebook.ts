// Rule change control: rules come from YAML files (the built-in library and any rules folders)
// and from the API (stored in rule_versions). Every version is kept; every change is audited with
// who, when and a diff; changes hot-reload into every running alerting (pg_notify on
// 'xiaoan_rule_changes', and a file watcher for the folders).
import { watch, type FSWatcher } from 'node:fs';
import { basename } from 'node:path';
import { silentLogger, systemClock, type Clock, type Logger } from '../../contract/index.ts';
import { compileRules, diffLines, LIBRARY_DIR, type CompiledRule, type RuleError, type RuleSet } from '../../rules/index.ts';
import type { Db } from '../db.ts';
import { loadRuleFiles } from './rulefiles.ts';
import { ts } from './store.ts';

export const RULE_CHANNEL = 'xiaoan_rule_changes';

export class RuleChangeError extends Error {
  constructor(message: string, readonly errors: RuleError[], readonly code: 'invalid' | 'not_found' | 'conflict' = 'invalid') {
    super(message);
    this.name = 'RuleChangeError';
  }
}

export interface RuleVersion {
  ruleId: string;
  version: number;
  hash: string;
  action: 'create' | 'update' | 'delete' | 'enable' | 'disable';
  author: string;
  comment: string;
  diff: string;
  createdAt: number;
  source: string;
}

export interface Rulebook {
  /** the effective rule set (files overlaid by API versions) */
  current(): RuleSet;
  /** create or update a rule from YAML text; audited; hot-reloads */
  save(input: { text: string; author: string; comment?: string }): Promise<RuleVersion>;
  remove(ruleId: string, author: string, comment?: string): Promise<RuleVersion>;
  setEnabled(ruleId: string, enabled: boolean, author: string, comment?: string): Promise<RuleVersion>;
  versions(ruleId: string): Promise<RuleVersion[]>;
  audit(opts?: { limit?: number; since?: number }): Promise<RuleVersion[]>;
  /** re-read files and stored versions now */
  reload(): Promise<RuleSet>;
  close(): Promise<void>;
}

export interface RulebookOptions {
  db: Db;
  /** rule folders besides the built-in library */
  dirs?: string[];
  /** include rules/library (default true) */
  library?: boolean;
  clock?: Clock;
  log?: Logger;
  /** called with every new effective rule set (e.g. alerting.setRules) */
  onChange?: (set: RuleSet) => void;
  /** watch the folders and reload on edits (default true) */
  watch?: boolean;
}

interface VersionRow {
  rule_id: string;
  version: number;
  hash: string;
  source: string;
  action: RuleVersion['action'];
  author: string;
  comment: string;
  diff: string;
  created_at: number;
}
const toVersion = (r: VersionRow): RuleVersion => ({ ruleId: r.rule_id, version: Number(r.version), hash: r.hash, action: r.action, author: r.author, comment: r.comment, diff: r.diff, createdAt: Math.round(Number(r.created_at)), source: r.source });
const COLS = `rule_id, version, hash, source, action, author, comment, diff, (extract(epoch from created_at) * 1000)::float8 as created_at`;

export async function createRulebook(opts: RulebookOptions): Promise<Rulebook> {
  const { db } = opts;
  const clock = opts.clock ?? systemClock;
  const log = (opts.log ?? silentLogger).child('rulebook');
  const dirs = [...(opts.library === false ? [] : [LIBRARY_DIR]), ...(opts.dirs ?? [])];
  let set: RuleSet = { rules: [], calendars: [], errors: [] };

  async function latestVersions(): Promise<VersionRow[]> {
    const r = await db.query<VersionRow>(
      `select ${COLS} from rule_versions v where version = (select max(version) from rule_versions w where w.rule_id = v.rule_id)`,
    );
    return r.rows;
  }

  async function record(ruleId: string, action: RuleVersion['action'], source: string, hash: string, author: string, comment: string): Promise<RuleVersion> {
    const now = clock.now();
    return db.transaction(async (tx) => {
      const prev = await tx.query<VersionRow>(`select ${COLS} from rule_versions where rule_id = $1 order by version desc limit 1 for update`, [ruleId]);
      const before = prev.rows[0];
      const version = (before ? Number(before.version) : 0) + 1;
      const diff = diffLines(before && before.action !== 'delete' ? before.source : '', action === 'delete' ? '' : source);
      const r = await tx.query<VersionRow>(
        `insert into rule_versions (rule_id, version, hash, source, action, author, comment, diff, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, ${ts(9)}) returning ${COLS}`,
        [ruleId, version, hash, source, action, author, comment, diff, now],
      );
      // announced on RULE_CHANNEL by the rule_versions trigger (migration 022)
      return toVersion(r.rows[0]!);
    });
  }

  /** file rules, overlaid by stored versions; file edits are recorded as versions by `file:<name>` */
  async function reload(): Promise<RuleSet> {
    const files = await loadRuleFiles(...dirs);
    const fromFiles = compileRules(files);
    const stored = await latestVersions();
    const byId = new Map(stored.map((v) => [v.rule_id, v]));
    // file rules whose text changed since the last recorded version: audit the change
    for (const r of fromFiles.rules) {
      const v = byId.get(r.id);
      if (!v) {
        await record(r.id, 'create', r.source, r.version, `file:${basename(r.file)}`, 'loaded from file');
      } else if (v.author.startsWith('file:') && v.hash !== r.version && v.action !== 'delete') {
        await record(r.id, 'update', r.source, r.version, `file:${basename(r.file)}`, 'file changed');
      }
    }
    const latest = new Map((await latestVersions()).map((v) => [v.rule_id, v]));
    // API versions win over files
    const apiDocs = [...latest.values()].filter((v) => !v.author.startsWith('file:') && v.action !== 'delete').map((v) => ({ file: `api:${v.rule_id}@${v.version}`, text: v.source }));
    const fromApi = compileRules(apiDocs);
    const rules = new Map<string, CompiledRule>();
    for (const r of fromFiles.rules) rules.set(r.id, r);
    for (const r of fromApi.rules) rules.set(r.id, r);
    for (const [id, v] of latest) {
      if (v.action === 'delete') rules.delete(id);
      else if (v.action === 'disable' && rules.has(id)) rules.set(id, { ...rules.get(id)!, enabled: false });
    }
    set = { rules: [...rules.values()], calendars: [...fromFiles.calendars, ...fromApi.calendars], errors: [...fromFiles.errors, ...fromApi.errors] };
    if (set.errors.length) log.error('rule errors; the rules with errors are not loaded', { errors: set.errors.slice(0, 20) });
    opts.onChange?.(set);
    return set;
  }

  await reload();

  // hot reload: other processes' API changes, and edits of the folders
  let reloading: Promise<unknown> | null = null;
  let again = false;
  const scheduleReload = () => {
    if (reloading) return void (again = true);
    reloading = reload()
      .catch((e) => log.error('reload failed', { error: e }))
      .finally(() => {
        reloading = null;
        if (again) {
          again = false;
          scheduleReload();
        }
      });
  };
  const unlisten = await db.listen(RULE_CHANNEL, () => scheduleReload());
  const watchers: FSWatcher[] = [];
  if (opts.watch !== false) {
    let timer: NodeJS.Timeout | null = null;
    for (const d of dirs) {
      try {
        const w = watch(d, () => {
          if (timer) clearTimeout(timer);
          timer = setTimeout(scheduleReload, 200);
        });
        w.on('error', () => {});
        watchers.push(w);
      } catch (e) {
        log.warn('cannot watch rule folder', { dir: d, error: e });
      }
    }
  }

  const requireExisting = async (ruleId: string) => {
    const r = await db.query<VersionRow>(`select ${COLS} from rule_versions where rule_id = $1 order by version desc limit 1`, [ruleId]);
    const v = r.rows[0];
    if (!v || v.action === 'delete') throw new RuleChangeError(`rule ${ruleId} does not exist / 规则不存在`, [], 'not_found');
    return v;
  };
  const who = (author: string) => {
    if (!author || !author.trim() || author.startsWith('file:')) throw new RuleChangeError('author must name the person making the change / 须注明修改人', []);
    return author.trim();
  };

  return {
    current: () => set,
    async save({ text, author, comment }) {
      const a = who(author);
      const c = compileRules([{ file: 'api', text }]);
      if (c.errors.length) throw new RuleChangeError(`rule has ${c.errors.length} error(s) / 规则有误: ${c.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, c.errors);
      if (c.rules.length !== 1) throw new RuleChangeError('send exactly one rule per change / 每次提交一条规则', []);
      const rule = c.rules[0]!;
      const prev = (await latestVersions()).find((v) => v.rule_id === rule.id);
      if (prev && prev.hash === rule.version && prev.action !== 'delete') throw new RuleChangeError(`rule ${rule.id} is unchanged / 规则未修改`, [], 'conflict');
      const v = await record(rule.id, prev && prev.action !== 'delete' ? 'update' : 'create', text, rule.version, a, comment ?? '');
      log.info('rule saved', { rule: rule.id, version: v.version, author: a });
      await reload();
      return v;
    },
    async remove(ruleId, author, comment) {
      const a = who(author);
      const prev = await requireExisting(ruleId);
      const v = await record(ruleId, 'delete', prev.source, prev.hash, a, comment ?? '');
      await reload();
      return v;
    },
    async setEnabled(ruleId, enabled, author, comment) {
      const a = who(author);
      const prev = await requireExisting(ruleId);
      const v = await record(ruleId, enabled ? 'enable' : 'disable', prev.source, prev.hash, a, comment ?? '');
      await reload();
      return v;
    },
    async versions(ruleId) {
      const r = await db.query<VersionRow>(`select ${COLS} from rule_versions where rule_id = $1 order by version`, [ruleId]);
      return r.rows.map(toVersion);
    },
    async audit(o = {}) {
      const r = await db.query<VersionRow>(
        `select ${COLS} from rule_versions where created_at >= ${ts(1)} order by created_at desc, rule_id, version desc limit $2`,
        [o.since ?? 0, Math.min(o.limit ?? 100, 1000)],
      );
      return r.rows.map(toVersion);
    },
    reload,
    async close() {
      for (const w of watchers) w.close();
      await unlisten();
      if (reloading) await reloading;
    },
  };
}
