// `xiaoan rules check [DIR|FILE…]` — compile rule files and report every error at once;
// `xiaoan rules backtest RULE --from T1 --to T2 [--sweep threshold=0.10..0.30:0.02]` — replay
// stored history through a rule and print the alerts it would have raised, per parameter value.
import { stat } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import { parseArgs, UserError, type Command } from '../command.ts';

function databaseUrl(flags: Record<string, string | true>, env: NodeJS.ProcessEnv): string {
  return typeof flags.database === 'string' ? flags.database : env.DATABASE_URL || `pglite:${env.XIAOAN_DATA ?? './data'}/pg`;
}

/** ISO 8601, a date (Asia/Shanghai midnight), epoch ms, or relative: -24h, -7d */
export function parseTime(text: string, now = Date.now()): number {
  const rel = /^-(\d+(?:\.\d+)?)(m|h|d)$/.exec(text);
  if (rel) return now - Number(rel[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 'm' | 'h' | 'd'];
  if (/^\d{12,14}$/.test(text)) return Number(text);
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) return Date.parse(`${text}T00:00:00+08:00`);
  const t = Date.parse(/[zZ]|[+-]\d{2}:?\d{2}$/.test(text) || !text.includes('T') ? text : `${text}+08:00`);
  if (Number.isNaN(t)) throw new UserError(`time "${text}" is not understood; use 2026-11-28, 2026-11-28T08:00 (Asia/Shanghai), ISO with zone, epoch ms or -24h / 时间格式有误`, 2);
  return t;
}

async function ruleDocs(paths: string[]) {
  const { loadRuleFiles } = await import('../../ingest/alerts/index.ts');
  const { LIBRARY_DIR } = await import('../../rules/index.ts');
  const docs: { file: string; text: string }[] = [];
  for (const p of paths.length ? paths : [LIBRARY_DIR]) {
    const s = await stat(p).catch(() => null);
    if (!s) throw new UserError(`${p}: no such file or folder / 找不到文件或目录`, 2);
    if (s.isDirectory()) docs.push(...(await loadRuleFiles(p)));
    else docs.push({ file: p, text: await readFile(p, 'utf8') });
  }
  return docs;
}

export const rulesCheck: Command = {
  name: 'rules check',
  summary: { zh: '检查规则文件（一次报告全部错误）', en: 'validate rule files and report every error at once' },
  usage: 'rules check [DIR|FILE ...] [--json] [--with-library]\n\n' +
    '  Without arguments checks the built-in library (rules/library). Exit code 1 when any rule has an error.\n' +
    '  --with-library also loads the built-in rules, so ids that clash with them are reported.',
  async run(args, io) {
    const { flags, positional } = parseArgs(args, ['json', 'with-library']);
    const { compileRules, LIBRARY_DIR } = await import('../../rules/index.ts');
    const docs = await ruleDocs(flags['with-library'] ? [LIBRARY_DIR, ...positional] : positional);
    const r = compileRules(docs);
    if (flags.json) {
      io.out(JSON.stringify({ ok: r.errors.length === 0, rules: r.rules.map((x) => ({ id: x.id, category: x.category, severity: x.severity, version: x.version, file: x.file })), calendars: r.calendars.map((c) => c.id), errors: r.errors }));
    } else {
      for (const x of r.rules) io.out(`ok     ${x.id.padEnd(24)} ${x.category.padEnd(9)} ${x.severity.padEnd(8)} ${x.name.zh} / ${x.name.en}`);
      for (const e of r.errors) io.out(`error  ${e.file}${e.rule ? ` rule ${e.rule}` : ''} ${e.path}: ${e.message}`);
      io.err(`${docs.length} file(s), ${r.rules.length} rule(s), ${r.calendars.length} calendar(s), ${r.errors.length} error(s) / ${r.errors.length} 处错误`);
    }
    return r.errors.length ? 1 : 0;
  },
};

export const rulesBacktest: Command = {
  name: 'rules backtest',
  summary: { zh: '用历史数据回测规则（可扫描阈值）', en: 'replay stored history through a rule (optionally sweeping a parameter)' },
  usage: 'rules backtest RULE --from T1 --to T2 [--sweep PARAM=FROM..TO:STEP] [--scope ORG_PATH] [--rules DIR] [--database URL] [--json] [--summary]\n\n' +
    '  RULE is a rule id (built-in or in --rules DIR) or a rule file.\n' +
    '  Times: 2026-11-28, 2026-11-28T08:00 (Asia/Shanghai), ISO with zone, epoch ms, or -24h / -7d.\n' +
    '  e.g. xiaoan rules backtest smoke-sustained --from -7d --to -0m --sweep threshold=0.10..0.30:0.02\n' +
    '  DATABASE_URL (or --database) names the store (default pglite:./data/pg).',
  async run(args, io) {
    const { flags, positional } = parseArgs(args, ['json', 'summary']);
    const ruleArg = positional[0];
    if (!ruleArg || positional.length > 1) throw new UserError('give one RULE: xiaoan rules backtest RULE --from T1 --to T2 / 须给出一条规则', 2);
    if (typeof flags.from !== 'string' || typeof flags.to !== 'string') throw new UserError('--from and --to are required / 须给出 --from 与 --to', 2);
    const now = Date.now();
    const from = parseTime(flags.from, now);
    const to = parseTime(flags.to, now);
    if (!(to > from)) throw new UserError(`--to (${new Date(to).toISOString()}) must be after --from (${new Date(from).toISOString()})`, 2);
    const { compileRules, LIBRARY_DIR, parseSweep } = await import('../../rules/index.ts');
    if (typeof flags.sweep === 'string') {
      try {
        parseSweep(flags.sweep);
      } catch (e) {
        throw new UserError((e as Error).message, 2);
      }
    }
    const isFile = /\.ya?ml$/.test(ruleArg);
    const docs = await ruleDocs(isFile ? [ruleArg] : [LIBRARY_DIR, ...(typeof flags.rules === 'string' ? [flags.rules] : [])]);
    const set = compileRules(docs);
    const rule = isFile ? set.rules[0] : set.rules.find((r) => r.id === ruleArg);
    if (!rule) {
      const errs = set.errors.filter((e) => isFile || e.rule === ruleArg);
      if (errs.length) throw new UserError(`rule has errors / 规则有误:\n${errs.map((e) => `  ${e.file} ${e.path}: ${e.message}`).join('\n')}`);
      throw new UserError(`no rule "${ruleArg}"; known: ${set.rules.map((r) => r.id).join(', ')} / 规则不存在`, 2);
    }
    const { openDb, migrate, scopeOf } = await import('../../ingest/index.ts');
    const { backtestOnHistory, formatBacktest, AlertError } = await import('../../ingest/alerts/index.ts');
    let scope;
    try {
      scope = scopeOf(typeof flags.scope === 'string' ? flags.scope : '37');
    } catch (e) {
      throw new UserError(`--scope: ${(e as Error).message}`, 2);
    }
    const db = await openDb(databaseUrl(flags, io.env));
    try {
      await migrate(db);
      const results = await backtestOnHistory(db, scope, { rule, calendars: set.calendars, from, to, sweep: typeof flags.sweep === 'string' ? flags.sweep : undefined });
      if (flags.json) for (const r of results) io.out(JSON.stringify(r));
      else {
        io.out(`# ${rule.id} ${rule.name.zh} / ${rule.name.en}  ${new Date(from).toISOString()} .. ${new Date(to).toISOString()}  scope ${scope.orgPath}`);
        for (const line of formatBacktest(results, { details: !flags.summary })) io.out(line);
      }
      return 0;
    } catch (e) {
      if (e instanceof AlertError) throw new UserError(e.message, 2);
      throw e;
    } finally {
      await db.close();
    }
  },
};
