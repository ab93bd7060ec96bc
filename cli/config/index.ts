// Configuration files for every tier. A file names its tier (`tier: edge | ingest | serve | demo`),
// is validated with that tier's schema, and every problem is reported at once as `path: message`.
// Environment variables override the file (naming rule in settings.ts and docs/configuration.md).
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isMap, LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { UserError } from '../command.ts';
import { demoSchema, type DemoFileConfig } from './demo.ts';
import { edgeDescriptions, edgeSchema, type EdgeFileConfig } from './edge.ts';
import { ingestSchema, type IngestFileConfig } from './ingest.ts';
import { serveSchema, type ServeFileConfig } from './serve.ts';
import { applyEnv, settingsOf, type EnvOverride, type Setting } from './settings.ts';

export { databaseConnectionUrl } from './common.ts';
export { envName, ENV_PREFIX, settingsOf, type EnvOverride, type Setting } from './settings.ts';
import { ENV_PREFIX as ENV_PREFIX_NAME } from './settings.ts';
export { edgeSchema, ingestSchema, serveSchema, demoSchema };

export const TIERS = ['edge', 'ingest', 'serve', 'demo'] as const;
export type Tier = (typeof TIERS)[number];

export interface TierConfigs {
  edge: EdgeFileConfig;
  ingest: IngestFileConfig;
  serve: ServeFileConfig;
  demo: DemoFileConfig;
}

export const tierSchemas: Record<Tier, z.ZodType> = {
  edge: edgeSchema,
  ingest: ingestSchema,
  serve: serveSchema,
  demo: demoSchema,
};

export const tierSummaries: Record<Tier, { zh: string; en: string; command: string }> = {
  edge: { zh: '学校网关', en: 'school gateway', command: 'xiaoan edge --config FILE' },
  ingest: { zh: '接入工作进程', en: 'ingest worker', command: 'xiaoan ingest --config FILE' },
  serve: { zh: '看板服务', en: 'dashboard server', command: 'xiaoan serve --config FILE' },
  demo: { zh: '单进程演示', en: 'all-in-one demo', command: 'xiaoan demo --config FILE' },
};

/** Every setting of a tier, with its environment variable. */
export function tierSettings(tier: Tier): Setting[] {
  const extra: Record<string, string> = tier === 'edge' ? edgeDescriptions : {};
  return settingsOf(tierSchemas[tier]).map((s) => ({ ...s, description: s.description || extra[s.path] || '' }));
}

export interface ConfigProblem {
  /** dotted path of the setting (`uplink.url`, `devices[2].profile`), `tier`, or `(file)` */
  path: string;
  message: string;
  /** 1-based line in the file, when the value came from the file */
  line?: number;
  /** the environment variable the value came from */
  env?: string;
}

export interface CheckResult<T extends Tier = Tier> {
  file: string;
  tier?: T;
  /** the validated configuration, defaults filled in; present only when there is no problem */
  config?: TierConfigs[T];
  problems: ConfigProblem[];
  /** environment variables that overrode the file (names only, never values) */
  applied: EnvOverride[];
}

export interface CheckOptions {
  env?: NodeJS.ProcessEnv;
  /** the tier the caller runs; a file naming another tier is a problem */
  expectTier?: Tier;
  /** for `_FILE` secrets; defaults to reading the file system */
  readSecret?: (file: string) => string;
}

/** `path: message (line N)` / `path: message (from XIAOAN_X)` */
export function formatProblem(p: ConfigProblem): string {
  const where = p.env ? ` (from ${p.env})` : p.line ? ` (line ${p.line})` : '';
  return `${p.path}: ${p.message}${where}`;
}

export function checkConfigText<T extends Tier = Tier>(text: string, file: string, opts: CheckOptions = {}): CheckResult<T> {
  const env = opts.env ?? process.env;
  const result: CheckResult<T> = { file, problems: [], applied: [] };
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  for (const e of doc.errors) {
    const line = e.linePos?.[0]?.line ?? (e.pos ? lineCounter.linePos(e.pos[0]).line : undefined);
    result.problems.push({ path: '(file)', message: `YAML: ${e.message.split('\n')[0]}`, ...(line ? { line } : {}) });
  }
  if (result.problems.length) return result;
  if (!isMap(doc.contents)) {
    result.problems.push({
      path: '(file)',
      message: text.trim() === '' ? 'the file is empty; it needs at least `tier: edge|ingest|serve|demo`' : 'the file must be a YAML mapping of settings (key: value)',
    });
    return result;
  }
  const data = doc.toJS() as Record<string, unknown>;
  const tier = data.tier;
  if (typeof tier !== 'string' || !(TIERS as readonly string[]).includes(tier)) {
    result.problems.push({
      path: 'tier',
      message:
        tier === undefined
          ? `missing; 请注明层级 add \`tier: ${opts.expectTier ?? 'edge'}\` (one of ${TIERS.join(', ')})`
          : `"${String(tier)}" is not a tier; use one of ${TIERS.join(', ')}`,
      ...lineOf(doc, lineCounter, ['tier']),
    });
    return result;
  }
  result.tier = tier as T;
  if (opts.expectTier && tier !== opts.expectTier) {
    result.problems.push({
      path: 'tier',
      message: `this file configures "${tier}", but \`xiaoan ${opts.expectTier}\` needs a \`tier: ${opts.expectTier}\` file`,
      ...lineOf(doc, lineCounter, ['tier']),
    });
    return result;
  }
  const body = { ...data };
  delete body.tier;
  const schema = tierSchemas[tier as Tier];
  const settings = settingsOf(schema);
  const { applied, problems } = applyEnv(body, settings, env, opts.readSecret ?? ((f) => readFileSync(f, 'utf8')));
  result.applied = applied;
  for (const p of problems) result.problems.push({ ...p, env: settings.find((s) => s.path === p.path)?.env + '_FILE' });
  const envByPath = new Map(applied.map((a) => [a.path, a.env]));
  let parsed: ReturnType<typeof schema.safeParse>;
  try {
    parsed = schema.safeParse(body);
  } catch (e) {
    // a cross-field check that met a value of the wrong type: the field checks say what is wrong
    parsed = { success: false, error: { issues: [{ code: 'custom', path: [], message: `cannot be checked further: ${(e as Error).message}` }] } } as never;
  }
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      for (const p of problemsOfIssue(issue, schema, (segs) => scalarSource(doc, text, segs))) {
        const fromEnv = envFor(p.segments, envByPath);
        result.problems.push({
          path: p.path,
          message: p.message,
          ...(fromEnv ? { env: fromEnv } : lineOf(doc, lineCounter, p.segments)),
        });
      }
    }
  }
  if (result.problems.length === 0) result.config = parsed.data as TierConfigs[T];
  return result;
}

export async function checkConfigFile<T extends Tier = Tier>(file: string, opts: CheckOptions = {}): Promise<CheckResult<T>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return {
      file,
      problems: [{
        path: '(file)',
        message: code === 'ENOENT' ? `配置文件不存在 ${file} does not exist` : `cannot read ${file} (${code ?? (e as Error).message})`,
      }],
      applied: [],
    };
  }
  return checkConfigText<T>(text, file, opts);
}

/** The error a tier command throws when its configuration has problems: one line per problem. */
export class ConfigError extends UserError {
  constructor(readonly file: string, readonly problems: ConfigProblem[]) {
    super(
      [`配置有 ${problems.length} 处错误 ${file} has ${problems.length} configuration problem${problems.length === 1 ? '' : 's'}:`,
        ...problems.map((p) => '  ' + formatProblem(p))].join('\n'),
    );
    this.name = 'ConfigError';
  }
}

/** For tier commands: the validated config of `file` for `tier`, environment applied; throws ConfigError listing every problem. */
export async function loadConfig<T extends Tier>(file: string, tier: T, opts: Omit<CheckOptions, 'expectTier'> = {}): Promise<TierConfigs[T]> {
  const r = await checkConfigFile<T>(file, { ...opts, expectTier: tier });
  if (r.problems.length || !r.config) throw new ConfigError(file, r.problems);
  return r.config;
}

/** The same for a configuration given only by the environment (containers without a file). */
export function configFromEnv<T extends Tier>(tier: T, env: NodeJS.ProcessEnv = process.env): TierConfigs[T] {
  const r = checkConfigText<T>(`tier: ${tier}\n`, '(environment)', { env, expectTier: tier });
  if (r.problems.length || !r.config) throw new ConfigError('(environment)', r.problems);
  return r.config;
}

// ---- issue → problems -------------------------------------------------------------------------

interface RawIssue {
  code: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
  expected?: string;
  input?: unknown;
  errors?: RawIssue[][];
}

function pathString(segments: PropertyKey[]): string {
  let s = '';
  for (const seg of segments) s += typeof seg === 'number' ? `[${seg}]` : s === '' ? String(seg) : `.${String(seg)}`;
  return s || '(root)';
}

/** The text a scalar had in the file (so `0370` is shown as written, not as the number YAML made of it). */
function scalarSource(doc: Document, text: string, segments: PropertyKey[]): string | undefined {
  const node = doc.getIn(segments as (string | number)[], true) as { range?: [number, number, number]; value?: unknown } | undefined;
  if (!node?.range || typeof node.value !== 'number') return undefined;
  return text.slice(node.range[0], node.range[1]).trim();
}

function problemsOfIssue(
  issue: RawIssue,
  schema: z.ZodType,
  sourceOf: (segments: PropertyKey[]) => string | undefined = () => undefined,
): Array<{ path: string; segments: PropertyKey[]; message: string }> {
  if (issue.code === 'unrecognized_keys' && issue.keys) {
    const known = knownKeysAt(schema, issue.path);
    return issue.keys.map((k) => {
      const guess = closest(k, known);
      return {
        path: pathString([...issue.path, k]),
        segments: [...issue.path, k],
        message: `unknown setting${guess ? `; did you mean "${guess}"?` : known.length ? `; known here: ${known.join(', ')}` : ''}`,
      };
    });
  }
  let message = issue.message;
  if (issue.code === 'invalid_type' && issue.message.endsWith('received undefined')) message = `required (${issue.expected ?? 'value'}) but missing`;
  const written = issue.code === 'invalid_type' && issue.expected === 'string' ? sourceOf(issue.path) : undefined;
  if (written !== undefined) {
    // YAML reads an unquoted 370102 as a number (and 0531 as 531): codes are text, so they need quotes.
    const last = issue.path[issue.path.length - 1];
    const code = /^\d+$/.test(written) ? ' (region and org codes are text: GB/T 2260, school ids)' : '';
    message = `expected text, but YAML read ${written} as a number${code}; 请加引号 quote it: ${typeof last === 'number' ? '-' : `${String(last)}:`} "${written}"`;
  }
  return [{ path: pathString(issue.path), segments: issue.path, message }];
}

function envFor(segments: PropertyKey[], envByPath: Map<string, string>): string | undefined {
  // The environment variable that set this value or one of its parents (a JSON list, say).
  for (let n = segments.length; n > 0; n--) {
    const key = segments.slice(0, n).filter((s) => typeof s === 'string').join('.');
    const hit = envByPath.get(key);
    if (hit && segments.slice(0, n).every((s) => typeof s === 'string')) return hit;
  }
  return undefined;
}

function lineOf(doc: Document, lc: LineCounter, segments: PropertyKey[]): { line?: number } {
  for (let n = segments.length; n > 0; n--) {
    const node = doc.getIn(segments.slice(0, n) as (string | number)[], true) as { range?: [number, number, number] } | undefined;
    if (node?.range) return { line: lc.linePos(node.range[0]).line };
    // a key with no usable value node: find the pair's key instead
    const parent = n > 1 ? doc.getIn(segments.slice(0, n - 1) as (string | number)[], true) : doc.contents;
    if (isMap(parent)) {
      const pair = parent.items.find((p) => (p.key as { value?: unknown })?.value === segments[n - 1]);
      const range = (pair?.key as { range?: [number, number, number] } | undefined)?.range;
      if (range) return { line: lc.linePos(range[0]).line };
    }
  }
  return {};
}

function knownKeysAt(schema: z.ZodType, path: PropertyKey[]): string[] {
  let s: unknown = schema;
  const def = (x: unknown) => (x as { _zod: { def: { type: string; innerType?: unknown; in?: unknown; shape?: Record<string, unknown>; element?: unknown } } })._zod.def;
  const strip = (x: unknown) => {
    for (let i = 0; i < 20; i++) {
      const d = def(x);
      if (d.innerType) x = d.innerType;
      else if (d.type === 'pipe') x = d.in;
      else break;
    }
    return x;
  };
  for (const seg of path) {
    s = strip(s);
    const d = def(s);
    if (typeof seg === 'number' && d.type === 'array') s = d.element;
    else if (d.shape && typeof seg === 'string' && d.shape[seg]) s = d.shape[seg];
    else return [];
  }
  const d = def(strip(s));
  return d.shape ? Object.keys(d.shape) : [];
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

// ---- XIAOAN_* variables that configure nothing ------------------------------------------------

/** XIAOAN_* variables read outside the tier schemas (commands, compose files, tests). */
export const OTHER_ENV = [
  'XIAOAN_DEBUG', 'XIAOAN_DATA', 'XIAOAN_LOG_LEVEL', 'XIAOAN_PROFILES', 'XIAOAN_EDGE_CONFIG', 'XIAOAN_INGEST_CONFIG',
  'XIAOAN_SERVE_CONFIG', 'XIAOAN_USER_PASSWORD', 'XIAOAN_GATEWAY_PASSWORD', 'XIAOAN_DEMO_PASSWORD', 'XIAOAN_DEVICE_PASSWORD',
  'XIAOAN_SECURE_COOKIES', 'XIAOAN_ID_HASH_KEY', 'XIAOAN_ID_HASH_KEY_FILE', 'XIAOAN_HEALTH_URL', 'XIAOAN_CHROMIUM',
  // compose and install-script host variables
  'XIAOAN_IMAGE', 'XIAOAN_NODE_RED_IMAGE', 'XIAOAN_BIND', 'XIAOAN_CITY', 'XIAOAN_GRAFANA_DASHBOARDS',
  'XIAOAN_PG_HOST', 'XIAOAN_PG_USER', 'XIAOAN_PG_PASSWORD', 'XIAOAN_PG_DB',
  'XIAOAN_INFLUX_URL', 'XIAOAN_INFLUX_USER', 'XIAOAN_INFLUX_PASSWORD', 'XIAOAN_INFLUX_DB',
  'XIAOAN_GATEWAY_ID', 'XIAOAN_UPLINK_URL',
] as const;
const OTHER_PREFIXES = ['XIAOAN_TEST_', 'XIAOAN_BENCH_', 'XIAOAN_SIM_'];

/** Every XIAOAN_* name something reads: each setting of each tier (and its _FILE form), and OTHER_ENV. */
export function knownEnvNames(): string[] {
  const names = new Set<string>(OTHER_ENV);
  for (const t of TIERS) for (const s of tierSettings(t)) names.add(s.env).add(s.env + '_FILE');
  return [...names].sort();
}

export interface UnknownEnv {
  name: string;
  /** the known names closest to it (a typo, a missing double underscore…) */
  closest: string[];
}

/** XIAOAN_* variables in `env` that nothing reads: a misspelt override silently does nothing. */
export function unknownEnv(env: NodeJS.ProcessEnv): UnknownEnv[] {
  const known = knownEnvNames();
  const set = new Set(known);
  return Object.keys(env)
    .filter((n) => n.startsWith(ENV_PREFIX_NAME) && !set.has(n) && !OTHER_PREFIXES.some((p) => n.startsWith(p)))
    .sort()
    .map((name) => {
      const scored = known.map((k) => ({ k, d: editDistance(name, k) })).sort((a, b) => a.d - b.d);
      const limit = Math.max(3, Math.floor(name.length / 4));
      return { name, closest: scored.filter((x) => x.d <= limit).slice(0, 2).map((x) => x.k) };
    });
}

/** One warning line per unknown variable, or none. */
export function unknownEnvWarnings(list: UnknownEnv[]): string[] {
  if (list.length === 0) return [];
  return [
    `警告 warning: ${list.length} XIAOAN_* environment variable${list.length === 1 ? '' : 's'} configure${list.length === 1 ? 's' : ''} nothing (未识别的环境变量); \`xiaoan config env\` lists the known ones:`,
    ...list.map((u) => `  ${u.name}${u.closest.length ? ` — did you mean ${u.closest.join(' or ')}?` : ''}`),
  ];
}
