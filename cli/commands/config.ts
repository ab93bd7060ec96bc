// `xiaoan config check FILE` — validate a tier's configuration file (with the environment
// applied) and report every problem at once; `xiaoan config env [TIER]` — list the settings
// and the environment variables that override them.
import { redact } from '../../contract/index.ts';
import { parseArgs, UserError, type Command } from '../command.ts';
import { checkConfigFile, formatProblem, tierSettings, TIERS, tierSummaries, unknownEnv, unknownEnvWarnings, type Tier } from '../config/index.ts';
import type { Setting } from '../config/settings.ts';

export const configCheck: Command = {
  name: 'config check',
  summary: { zh: '检查配置文件（报告全部错误）', en: 'validate a configuration file and report every problem' },
  usage: 'config check FILE [--tier edge|ingest|serve|demo] [--json] [--print] [--no-env]\n\n' +
    '  FILE 的 `tier:` 决定用哪个模式校验 — the file\'s `tier:` picks the schema.\n' +
    '  Environment variables XIAOAN_* override the file (see `xiaoan config env TIER`); --no-env ignores them.\n' +
    '  --print shows the effective configuration with secrets hidden. Exit code 1 when there is any problem.',
  async run(args, io) {
    const { flags, positional } = parseArgs(args, ['json', 'print', 'no-env']);
    const file = positional[0];
    if (!file || positional.length > 1) throw new UserError('需要一个配置文件 give exactly one FILE: xiaoan config check FILE', 2);
    const expectTier = flags.tier === undefined ? undefined : String(flags.tier);
    if (expectTier !== undefined && !(TIERS as readonly string[]).includes(expectTier)) {
      throw new UserError(`--tier "${expectTier}" is not one of ${TIERS.join(', ')}`, 2);
    }
    const env = flags['no-env'] ? {} : io.env;
    const r = await checkConfigFile(file, { env, ...(expectTier ? { expectTier: expectTier as Tier } : {}) });
    const strangers = unknownEnv(env);
    if (flags.json) {
      io.out(JSON.stringify({
        file,
        tier: r.tier ?? null,
        ok: r.problems.length === 0,
        problems: r.problems,
        env: r.applied.map((a) => a.env),
        unknownEnv: strangers,
        ...(flags.print && r.config ? { config: redact(r.config) } : {}),
      }));
      return r.problems.length ? 1 : 0;
    }
    for (const p of r.problems) io.out(formatProblem(p));
    for (const l of unknownEnvWarnings(strangers)) io.err(l);
    if (r.problems.length) {
      io.err(`${file}: ${r.problems.length} 处错误 problem${r.problems.length === 1 ? '' : 's'}${r.tier ? ` (tier ${r.tier})` : ''}`);
      return 1;
    }
    io.err(`${file}: 配置有效 ok — tier ${r.tier} (${tierSummaries[r.tier!].en})` +
      (r.applied.length ? `; from the environment: ${r.applied.map((a) => a.env).join(', ')}` : ''));
    if (flags.print) io.out(JSON.stringify(redact(r.config), null, 2));
    return 0;
  },
};

export const configEnv: Command = {
  name: 'config env',
  summary: { zh: '列出配置项及其环境变量', en: 'list a tier\'s settings and their environment variables' },
  usage: 'config env [edge|ingest|serve|demo] [--markdown] [--write docs/configuration.md]\n\n' +
    '  --write FILE replaces the table between <!-- settings-table:begin --> and <!-- settings-table:end --> in FILE.',
  async run(args, io) {
    const { flags, positional } = parseArgs(args, ['markdown']);
    const tiers = positional.length ? positional : [...TIERS];
    for (const t of tiers) {
      if (!(TIERS as readonly string[]).includes(t)) throw new UserError(`"${t}" is not a tier; use one of ${TIERS.join(', ')}`, 2);
    }
    if (typeof flags.write === 'string') {
      const { readFile, writeFile } = await import('node:fs/promises');
      const text = await readFile(flags.write, 'utf8').catch(() => {
        throw new UserError(`cannot read ${flags.write}`);
      });
      const begin = text.indexOf(TABLE_BEGIN);
      const end = text.indexOf(TABLE_END);
      if (begin < 0 || end < begin) throw new UserError(`${flags.write} has no ${TABLE_BEGIN} … ${TABLE_END} markers`);
      await writeFile(flags.write, text.slice(0, begin + TABLE_BEGIN.length) + '\n' + settingsMarkdown(tiers as Tier[]) + '\n' + text.slice(end));
      io.err(`${flags.write}: settings table regenerated`);
      return 0;
    }
    if (flags.markdown) {
      io.out(settingsMarkdown(tiers as Tier[]));
      return 0;
    }
    for (const t of tiers as Tier[]) {
      for (const s of tierSettings(t)) io.out(`${t}\t${s.path}\t${s.env}${s.secret ? '(_FILE)' : ''}\t${describeDefault(s)}`);
    }
    return 0;
  },
};

function describeDefault(s: Setting): string {
  if (s.default !== undefined) return JSON.stringify(s.default);
  return s.required ? 'required' : '—';
}

export const TABLE_BEGIN = '<!-- settings-table:begin -->';
export const TABLE_END = '<!-- settings-table:end -->';

/** The table in docs/configuration.md, generated from the schemas. */
export function settingsMarkdown(tiers: readonly Tier[] = TIERS): string {
  const out: string[] = [
    '| tier | file setting | environment variable | type | default | description |',
    '|---|---|---|---|---|---|',
  ];
  for (const t of tiers) {
    for (const s of tierSettings(t)) {
      const type = s.values ? s.values.join(' \\| ') : s.kind;
      const env = s.secret ? `\`${s.env}\`, \`${s.env}_FILE\`` : `\`${s.env}\``;
      const desc = (s.description || '').replace(/\|/g, '\\|') + (s.secret ? ' **(secret)**' : '');
      out.push(`| ${t} | \`${s.path}\` | ${env} | ${type} | ${describeDefault(s).replace(/\|/g, '\\|')} | ${desc} |`);
    }
  }
  return out.join('\n');
}

export const configCommands: Command[] = [configCheck, configEnv];
