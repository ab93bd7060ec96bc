// Rule pages for rule authors: thresholds (params), scope overrides, a backtest over stored
// history for a range of a parameter, and saving with a change note (every version kept in
// rule_versions with author, note and diff; the running alerting module reloads it at once).
//
// The dashboards do not import rules/ (layout rule): the wiring hands in the rule library's
// functions (`lib`), and the alerting module's rules()/setRules().

import { createHash } from 'node:crypto';
import { parse as parseYaml, parseDocument } from 'yaml';
import { z } from 'zod';
import { inScope, type Clock, type Logger } from '../contract/index.ts';
import type { Db } from '../ingest/db.ts';
import type { Scope } from '../ingest/scope.ts';
import type { ApiRouter } from './routes.ts';
import type { ApiDeps, Closer } from './api.ts';
import { audit, parseTime } from './api.ts';
import { ApiError, badRequest } from './http.ts';
import { errorSchema } from './schemas.ts';
import type { DashboardStore } from './types.ts';

/** The parts of a compiled rule the pages use (rules/types.ts CompiledRule satisfies it). */
export interface RuleLike {
  id: string;
  version: string;
  file: string;
  name: { zh: string; en: string };
  description: { zh: string; en: string } | null;
  category: string;
  severity: string;
  enabled: boolean;
  when: { kind: string; metric?: string; types?: string[] };
  params: Readonly<Record<string, number>>;
  overrides: { orgPath: string | null; schoolId: string | null; device: string | null; params: Readonly<Record<string, number>> }[];
  source: string;
}

export interface RuleSetLike {
  rules: RuleLike[];
  calendars: readonly unknown[];
  errors: { file: string; rule: string | null; path: string; message: string }[];
}

/** The rule library's functions (rules/index.ts), injected by the wiring. */
export interface RulesLib {
  compileRules(docs: { file: string; text: string }[]): RuleSetLike;
  backtest(rule: any, records: readonly any[], opts?: { sweep?: { param: string; values: number[] }; tickMs?: number; devices?: readonly any[]; until?: number }): { param: string | null; value: number | null; alerts: unknown[]; records: number }[];
  diffLines(before: string, after: string): string;
  normaliseScope(text: string): { orgPath: string | null; schoolId: string | null; depth: number };
}

export interface RulesService {
  list(scope: Scope): Promise<RuleLike[]>;
  backtest(scope: Scope, ruleId: string, q: BacktestRequest): Promise<BacktestResponse>;
  save(scope: Scope, ruleId: string, change: RuleChange, user: string, note: string): Promise<{ version: number; rule: RuleLike }>;
  versions(scope: Scope, ruleId: string): Promise<{ version: number; author: string; comment: string; diff: string; createdAt: number }[]>;
}

export interface BacktestRequest {
  param: string;
  from: number;
  to: number;
  step: number;
  since: number;
  until: number;
}
export interface BacktestResponse {
  ruleId: string;
  param: string;
  current: number | null;
  since: number;
  until: number;
  records: number;
  devices: number;
  truncated: boolean;
  points: { value: number; alerts: number }[];
}
export interface RuleChange {
  params?: Record<string, number>;
  /** overrides inside the author's subtree (those outside it are kept as they are) */
  overrides?: { scope: string; params: Record<string, number> }[];
}

export class RuleServiceError extends Error {
  constructor(message: string, readonly code: 'not_found' | 'invalid' | 'forbidden') {
    super(message);
  }
}

const MAX_DEVICES = 200;
const MAX_VALUES = 50;

export async function createRulesService(opts: {
  db: Db;
  store: DashboardStore;
  alerting: { rules(): readonly unknown[]; setRules(set: any): void };
  lib: RulesLib;
  /** the rule set the alerting module was started with (its calendars are kept on reload) */
  initial: { calendars: readonly unknown[] };
  clock: Clock;
  log: Logger;
}): Promise<RulesService> {
  const { db, store, lib, clock } = opts;
  const log = opts.log.child('rules');
  const current = () => opts.alerting.rules() as RuleLike[];
  const find = (id: string) => {
    const r = current().find((x) => x.id === id);
    if (!r) throw new RuleServiceError(`rule ${id} not found / 规则不存在`, 'not_found');
    return r;
  };

  const replaceRule = (rule: RuleLike) => {
    const rules = current().map((r) => (r.id === rule.id ? rule : r));
    opts.alerting.setRules({ rules, calendars: opts.initial.calendars, errors: [] });
  };

  // Saved versions survive a restart: apply the newest saved source of each rule over the files.
  const saved = await db.query<{ rule_id: string; source: string; version: number }>(
    `select distinct on (rule_id) rule_id, source, version from rule_versions order by rule_id, version desc`,
  );
  for (const row of saved.rows) {
    const base = current().find((r) => r.id === row.rule_id);
    if (!base) continue;
    const compiled = lib.compileRules([{ file: base.file, text: row.source }]);
    const rule = compiled.rules.find((r) => r.id === row.rule_id);
    if (!rule || compiled.errors.length) {
      log.error('saved rule version does not compile; keeping the file version', { rule: row.rule_id, version: row.version, errors: compiled.errors.map((e) => e.message) });
      continue;
    }
    if (rule.version !== base.version) replaceRule(rule);
  }

  function overrideInScope(scope: Scope, o: { orgPath: string | null; device: string | null }): boolean {
    if (o.device) return !scope.orgPath.includes('/'); // device overrides: province-wide authors only
    if (o.orgPath) return inScope(scope.orgPath, o.orgPath);
    return !scope.orgPath.includes('/');
  }
  /** What a reader sees of an override: inside their subtree, or above it (it applies to them). */
  function overrideVisible(scope: Scope, o: { orgPath: string | null; device: string | null }): boolean {
    return overrideInScope(scope, o) || (o.orgPath !== null && !o.device && inScope(o.orgPath, scope.orgPath));
  }
  /** An override as written in YAML ({ scope | device, params }), visible to the reader? */
  function writtenVisible(scope: Scope, o: { scope?: unknown; device?: unknown }): boolean {
    if (o.device) return overrideVisible(scope, { orgPath: null, device: String(o.device) });
    try {
      return overrideVisible(scope, { orgPath: lib.normaliseScope(String(o.scope)).orgPath, device: null });
    } catch {
      return !scope.orgPath.includes('/');
    }
  }
  /** A rule's YAML with the overrides outside the reader's reach taken out. */
  function scopedSource(scope: Scope, source: string): string {
    const doc = parseDocument(source);
    const seq = doc.get('overrides') as { items?: { toJSON(): unknown }[] } | undefined;
    if (!seq?.items) return source;
    const kept = seq.items.filter((item) => writtenVisible(scope, (item.toJSON() ?? {}) as { scope?: unknown; device?: unknown }));
    if (kept.length === seq.items.length) return source;
    seq.items = kept;
    return doc.toString({ lineWidth: 0 });
  }
  /** A diff without the lines about overrides outside the reader's reach. */
  function scopedDiff(scope: Scope, diff: string): string {
    return diff
      .split('\n')
      .filter((line) => {
        const text = line.slice(2).trim().replace(/^-\s*/, '');
        if (!/\b(scope|device)\s*:/.test(text)) return true;
        let o: unknown;
        try {
          o = parseYaml(text);
        } catch {
          return !scope.orgPath.includes('/');
        }
        return !o || typeof o !== 'object' || writtenVisible(scope, o as { scope?: unknown; device?: unknown });
      })
      .join('\n');
  }

  return {
    async list(scope) {
      // Every author sees every rule (rules apply everywhere); overrides shown are those in scope.
      return current().map((r) => ({ ...r, overrides: r.overrides.filter((o) => overrideVisible(scope, o)), source: scopedSource(scope, r.source) }));
    },

    async backtest(scope, ruleId, q) {
      const rule = find(ruleId);
      if (!(q.param in rule.params)) throw new RuleServiceError(`rule ${ruleId} has no parameter "${q.param}" (known: ${Object.keys(rule.params).join(', ')})`, 'invalid');
      if (!(q.step > 0) || !(q.to >= q.from)) throw new RuleServiceError('the range needs from ≤ to and a step above 0 / 范围须 from ≤ to 且步长大于 0', 'invalid');
      const n = Math.floor((q.to - q.from) / q.step + 1e-9) + 1;
      if (n > MAX_VALUES) throw new RuleServiceError(`at most ${MAX_VALUES} values per backtest (this range has ${n}); widen the step / 取值过多，请加大步长`, 'invalid');
      const decimals = Math.max(...[q.from, q.to, q.step].map((x) => (String(x).split('.')[1] ?? '').length));
      const values = Array.from({ length: n }, (_, i) => Number((q.from + i * q.step).toFixed(decimals)));
      if (!(q.since < q.until) || q.until - q.since > 31 * 86400_000) throw new RuleServiceError('the period must be at most 31 days, since before until / 回测时段须不超过 31 天', 'invalid');

      // History in the author's scope: readings of the rule's metric, or events of its types.
      const devices = (await store.queries.listDevices(scope, { limit: MAX_DEVICES + 1 })) as { gatewayId: string; deviceId: string; orgPath: string; profile?: string; building?: string | null; room?: string | null; expectedIntervalMs?: number | null; state?: string; lastSeen?: number | null }[];
      const truncated = devices.length > MAX_DEVICES;
      const used = devices.slice(0, MAX_DEVICES);
      const infos = used.map((d) => ({ gatewayId: d.gatewayId, deviceId: d.deviceId, orgPath: d.orgPath, profile: d.profile ?? null, building: d.building ?? null, room: d.room ?? null, expectedIntervalMs: d.expectedIntervalMs ?? null }));
      const infoOf = new Map(infos.map((i) => [`${i.gatewayId}/${i.deviceId}`, i]));
      const records: any[] = [];
      if (rule.when.metric) {
        for (const d of used) {
          const r = (await store.queries.readings(scope, { device: d.deviceId, gatewayId: d.gatewayId, metric: rule.when.metric, from: q.since, to: q.until, resolution: 'raw', limit: 100_000 })) as { points: { ts: number; value: number; gatewayId: string }[] };
          let seq = 0;
          for (const p of r.points) {
            records.push({ kind: 'reading', gatewayId: p.gatewayId, orgPath: d.orgPath, device: infoOf.get(`${p.gatewayId}/${d.deviceId}`), reading: { seq: seq++, device: d.deviceId, metric: rule.when.metric, ts: p.ts, value: p.value, quality: 'good' } });
          }
        }
      } else if (rule.when.types?.length && store.queries.events) {
        for (const type of rule.when.types) {
          const events = (await store.queries.events(scope, { type, from: q.since, to: q.until, limit: 10_000 })) as { gatewayId: string; seq: number; deviceId: string; orgPath: string; type: string; ts: number; priority: 'alarm' | 'normal'; drill: boolean; data: Record<string, unknown> }[];
          for (const e of events) {
            records.push({ kind: 'event', gatewayId: e.gatewayId, orgPath: e.orgPath, device: infoOf.get(`${e.gatewayId}/${e.deviceId}`), event: { seq: e.seq, device: e.deviceId, type: e.type, ts: e.ts, priority: e.priority, drill: e.drill, data: e.data } });
          }
        }
      } else {
        throw new RuleServiceError(`rule ${ruleId} (${rule.when.kind}) cannot be backtested from readings or events / 此类规则不支持回测`, 'invalid');
      }
      records.sort((a, b) => (a.kind === 'reading' ? a.reading.ts : a.event.ts) - (b.kind === 'reading' ? b.reading.ts : b.event.ts));
      // Ticks complete durations and silences; coarser over long periods to bound the work.
      const tickMs = Math.min(10_000, Math.max(1000, Math.round((q.until - q.since) / 200_000 / 1000) * 1000));
      const results = lib.backtest(rule, records, { sweep: { param: q.param, values }, tickMs, devices: infos, until: q.until });
      return {
        ruleId,
        param: q.param,
        current: rule.params[q.param] ?? null,
        since: q.since,
        until: q.until,
        records: records.length,
        devices: used.length,
        truncated,
        points: results.map((r) => ({ value: r.value as number, alerts: r.alerts.length })),
      };
    },

    async save(scope, ruleId, change, user, note) {
      const rule = find(ruleId);
      const provinceWide = !scope.orgPath.includes('/');
      if (change.params && Object.keys(change.params).length && !provinceWide) {
        throw new RuleServiceError(`only a province-wide author changes a rule's own parameters; add an override for ${scope.orgPath} instead / 请为本辖区添加范围覆盖`, 'forbidden');
      }
      for (const [k, v] of Object.entries(change.params ?? {})) {
        if (!(k in rule.params)) throw new RuleServiceError(`"${k}" is not a parameter of ${ruleId} (known: ${Object.keys(rule.params).join(', ')})`, 'invalid');
        if (typeof v !== 'number' || !Number.isFinite(v)) throw new RuleServiceError(`params.${k} must be a number`, 'invalid');
      }
      const newOverrides: { scope: string; params: Record<string, number> }[] = [];
      for (const [i, o] of (change.overrides ?? []).entries()) {
        if (!o || typeof o.scope !== 'string') throw new RuleServiceError(`overrides[${i}].scope is required`, 'invalid');
        let norm;
        try {
          norm = lib.normaliseScope(o.scope);
        } catch (e) {
          throw new RuleServiceError(`overrides[${i}].scope: ${(e as Error).message}`, 'invalid');
        }
        if (!norm.orgPath || !inScope(scope.orgPath, norm.orgPath)) throw new RuleServiceError(`overrides[${i}].scope "${o.scope}" is outside your part of the org tree (${scope.orgPath}) / 超出管辖范围`, 'forbidden');
        for (const [k, v] of Object.entries(o.params ?? {})) {
          if (!(k in rule.params)) throw new RuleServiceError(`overrides[${i}].params.${k}: not a parameter of ${ruleId}`, 'invalid');
          if (typeof v !== 'number' || !Number.isFinite(v)) throw new RuleServiceError(`overrides[${i}].params.${k} must be a number`, 'invalid');
        }
        newOverrides.push({ scope: norm.orgPath, params: o.params });
      }

      // Edit the rule's own YAML (comments kept): params, then overrides (outside the author's scope kept).
      const doc = parseDocument(rule.source);
      for (const [k, v] of Object.entries(change.params ?? {})) doc.setIn(['params', k], v);
      if (change.overrides) {
        const existing = (doc.get('overrides') as { toJSON(): unknown } | undefined)?.toJSON() as { scope?: string; device?: string; params: Record<string, number> }[] | undefined;
        const kept = (existing ?? []).filter((o) => {
          if (o.device) return !provinceWide;
          try {
            const p = lib.normaliseScope(String(o.scope)).orgPath;
            return !(p && inScope(scope.orgPath, p));
          } catch {
            return true;
          }
        });
        const next = [...kept, ...newOverrides];
        doc.set('overrides', doc.createNode(next, { flow: false }));
        for (const item of (doc.get('overrides') as { items: { flow?: boolean }[] }).items ?? []) item.flow = true;
      }
      const source = doc.toString({ lineWidth: 0 });
      const compiled = lib.compileRules([{ file: rule.file, text: source }]);
      const updated = compiled.rules.find((r) => r.id === ruleId);
      if (compiled.errors.length || !updated) {
        throw new RuleServiceError(`the changed rule does not compile: ${compiled.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, 'invalid');
      }
      const version = await db.transaction(async (tx) => {
        const r = await tx.query<{ v: number }>('select coalesce(max(version), 0)::int as v from rule_versions where rule_id = $1', [ruleId]);
        const v = Number(r.rows[0]?.v ?? 0) + 1;
        await tx.query(
          `insert into rule_versions (rule_id, version, hash, source, action, author, comment, diff, created_at)
           values ($1, $2, $3, $4, 'update', $5, $6, $7, to_timestamp($8 / 1000.0))`,
          [ruleId, v, createHash('sha256').update(source).digest('hex').slice(0, 12), source, user, note, lib.diffLines(rule.source, source), clock.now()],
        );
        return v;
      });
      replaceRule(updated);
      log.info('rule saved', { rule: ruleId, version, by: user });
      return { version, rule: updated };
    },

    async versions(scope, ruleId) {
      find(ruleId);
      const r = await db.query<{ version: number; author: string; comment: string; diff: string; created_ms: number }>(
        `select version, author, comment, diff, (extract(epoch from created_at) * 1000)::float8 as created_ms
           from rule_versions where rule_id = $1 order by version desc limit 50`,
        [ruleId],
      );
      // A version whose every change lies outside the reader's reach is not theirs to see (nor
      // its author and note); the others show only the lines within reach.
      return r.rows
        .map((x) => ({ version: Number(x.version), author: x.author, comment: x.comment, diff: scopedDiff(scope, x.diff), whole: x.diff, createdAt: Math.round(Number(x.created_ms)) }))
        .filter((x) => x.diff.trim() !== '' || x.whole.trim() === '')
        .map(({ whole: _whole, ...x }) => x);
    },
  };
}

function ruleError(e: unknown): never {
  if (e instanceof RuleServiceError) {
    const status = { not_found: 404, invalid: 400, forbidden: 403 }[e.code];
    throw new ApiError(status, e.code === 'not_found' ? 'no_such_rule' : e.code, { zh: e.message, en: e.message });
  }
  throw e;
}

function num(body: Record<string, unknown>, key: string): number {
  const v = body[key];
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw badRequest('bad_number', `${key} 须为数字`, `${key} must be a number`);
  return n;
}

const ruleParams = z.object({ id: z.string().min(1).max(100) });
const numeric = z.union([z.number(), z.string().max(40)]);
const backtestBody = z.object({ param: z.string().max(64).optional(), from: numeric.optional(), to: numeric.optional(), step: numeric.optional(), since: numeric.optional(), until: numeric.optional() });
const saveBody = z.object({
  note: z.string().max(2000).optional(),
  params: z.record(z.string(), z.unknown()).optional(),
  overrides: z.array(z.looseObject({ scope: z.string().max(200), params: z.record(z.string(), z.unknown()).optional() })).max(500).optional(),
});

export async function registerRulesApi(api: ApiRouter, deps: ApiDeps): Promise<Closer[]> {
  const notConnected = () => new ApiError(503, 'rules_not_connected', { zh: '规则服务未接入', en: 'the rules service is not connected' });

  api.route('GET', '/api/rules', { permission: 'rules.read', scope: 'org-subtree', summary: 'Rules with their parameters; overrides and source only as far as your subtree reaches' }, async (ctx) => {
    const svc = deps.extras.rules;
    if (!svc) throw notConnected();
    const rules = await svc.list(ctx.principal.scope);
    ctx.send(200, {
      rules: rules.map((r) => ({ id: r.id, name: r.name, description: r.description, category: r.category, severity: r.severity, enabled: r.enabled, when: r.when, params: r.params, overrides: r.overrides, version: r.version, source: r.source })),
    });
  });

  api.route('GET', '/api/rules/:id/versions', { permission: 'rules.read', scope: 'org-subtree', summary: "A rule's saved versions (diffs within your subtree's reach)", params: ruleParams, response: { 404: errorSchema } }, async (ctx, { id }) => {
    const svc = deps.extras.rules;
    if (!svc) throw notConnected();
    ctx.send(200, { versions: await svc.versions(ctx.principal.scope, id!).catch(ruleError) });
  });

  api.route('POST', '/api/rules/:id/backtest', { permission: 'rules.write', scope: 'org-subtree', summary: 'Backtest a range of one parameter over the stored history of your subtree', params: ruleParams, body: backtestBody }, async (ctx, { id }) => {
    const svc = deps.extras.rules;
    if (!svc) throw notConnected();
    const body = ctx.body;
    if (typeof body.param !== 'string') throw badRequest('bad_param', '请选择参数 param', 'param is required');
    const until = parseTime(typeof body.until === 'string' || typeof body.until === 'number' ? String(body.until) : null, 'until', api.clock.now());
    const since = parseTime(typeof body.since === 'string' || typeof body.since === 'number' ? String(body.since) : null, 'since', until - 7 * 86400_000);
    const result = await svc
      .backtest(ctx.principal.scope, id!, { param: body.param, from: num(body, 'from'), to: num(body, 'to'), step: num(body, 'step'), since, until })
      .catch(ruleError);
    ctx.send(200, result);
  });

  api.route('POST', '/api/rules/:id', { permission: 'rules.write', scope: 'org-subtree', summary: 'Save a change (parameters province-wide, overrides inside your subtree) with a note', params: ruleParams, body: saveBody }, async (ctx, { id }) => {
    const svc = deps.extras.rules;
    if (!svc) throw notConnected();
    const body = ctx.body;
    const note = typeof body.note === 'string' ? body.note.trim() : '';
    if (note.length < 2 || note.length > 500) throw badRequest('note_required', '请填写修改说明（2–500 字）', 'a change note (2–500 characters) is required');
    const params = body.params as Record<string, number> | undefined;
    const overrides = body.overrides as RuleChange['overrides'];
    if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) throw badRequest('bad_params', 'params 须为对象', 'params must be an object');
    if (overrides !== undefined && !Array.isArray(overrides)) throw badRequest('bad_overrides', 'overrides 须为数组', 'overrides must be an array');
    const r = await svc.save(ctx.principal.scope, id!, { params, overrides }, ctx.principal.user.username, note).catch(ruleError);
    await audit(api, ctx, 'rule.save', id!, ctx.principal.user.orgPath, { version: r.version });
    ctx.send(200, { version: r.version, rule: { id: r.rule.id, params: r.rule.params, overrides: r.rule.overrides, version: r.rule.version } });
  });

  return [];
}
