// Settings of a tier's schema, walked once: every leaf setting with its file path, its
// environment variable, its kind, default and description. The same walk drives environment
// overrides, `xiaoan config env` and the table in docs/configuration.md, so they cannot drift.
//
// Naming rule (documented in docs/configuration.md):
//   XIAOAN_ + the setting's path, each level in UPPER_SNAKE_CASE, levels joined by a double underscore.
//   uplink.password        → XIAOAN_UPLINK__PASSWORD
//   deviceBroker.port      → XIAOAN_DEVICE_BROKER__PORT
//   buffer.maxRecords      → XIAOAN_BUFFER__MAX_RECORDS
//   Adding _FILE reads the value from that file (Docker / systemd secrets):
//   XIAOAN_UPLINK__PASSWORD_FILE=/run/secrets/uplink_password
//   Lists and maps (devices, serviceAccounts) take JSON.

import type { z } from 'zod';

export type SettingKind = 'string' | 'number' | 'boolean' | 'json';

export interface Setting {
  /** dotted path in the file, e.g. `uplink.password` */
  path: string;
  env: string;
  kind: SettingKind;
  /** allowed values of an enum or literal */
  values?: string[];
  default?: unknown;
  required: boolean;
  description: string;
  /** never printed; prefer the _FILE form */
  secret: boolean;
}

export const ENV_PREFIX = 'XIAOAN_';

/** `deviceBroker` → `DEVICE_BROKER` */
export function envSegment(key: string): string {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .toUpperCase();
}

export function envName(path: string[]): string {
  return ENV_PREFIX + path.map(envSegment).join('__');
}

// zod 4 keeps its definition at `_zod.def`; only the wrappers we need are unwrapped here.
interface Def {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  entries?: Record<string, string>;
  values?: unknown[];
  options?: z.ZodType[];
  defaultValue?: unknown;
}
const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;
const metaOf = (s: z.ZodType): Record<string, unknown> =>
  ((s as unknown as { meta?: () => Record<string, unknown> | undefined }).meta?.() ?? {}) as Record<string, unknown>;

interface Unwrapped {
  core: z.ZodType;
  optional: boolean;
  default?: unknown;
  description?: string;
  secret: boolean;
}

function unwrap(schema: z.ZodType): Unwrapped {
  let s = schema;
  let optional = false;
  let dflt: unknown;
  let description: string | undefined;
  let secret = false;
  for (let i = 0; i < 20; i++) {
    const meta = metaOf(s);
    description ??= (meta.description as string | undefined) ?? (s as { description?: string }).description;
    if (meta.secret === true) secret = true;
    const d = defOf(s);
    if (d.type === 'optional' || d.type === 'nullable' || d.type === 'readonly' || d.type === 'catch' || d.type === 'nonoptional') {
      if (d.type !== 'nonoptional') optional = true;
      s = d.innerType!;
    } else if (d.type === 'default' || d.type === 'prefault') {
      optional = true;
      if (dflt === undefined) dflt = d.defaultValue;
      s = d.innerType!;
    } else if (d.type === 'pipe') {
      s = d.in!;
    } else break;
  }
  return { core: s, optional, default: dflt, description, secret };
}

/** Every leaf setting of an object schema, in declaration order. */
export function settingsOf(schema: z.ZodType, path: string[] = [], parentOptional = false): Setting[] {
  const u = unwrap(schema);
  const d = defOf(u.core);
  if (d.type === 'object' && d.shape) {
    const out: Setting[] = [];
    for (const [key, child] of Object.entries(d.shape)) out.push(...settingsOf(child, [...path, key], parentOptional || u.optional));
    return out;
  }
  let kind: SettingKind = 'json';
  let values: string[] | undefined;
  if (d.type === 'string') kind = 'string';
  else if (d.type === 'number' || d.type === 'int' || d.type === 'bigint') kind = 'number';
  else if (d.type === 'boolean') kind = 'boolean';
  else if (d.type === 'enum') {
    kind = 'string';
    values = Object.values(d.entries ?? {}).map(String);
  } else if (d.type === 'literal') {
    const v = d.values ?? [];
    kind = typeof v[0] === 'number' ? 'number' : typeof v[0] === 'boolean' ? 'boolean' : 'string';
    values = v.map(String);
  } else if (d.type === 'union' && d.options?.every((o) => ['string', 'enum', 'literal'].includes(defOf(unwrap(o).core).type))) {
    kind = 'string';
  }
  const name = path.join('.');
  return [
    {
      path: name,
      env: envName(path),
      kind,
      ...(values ? { values } : {}),
      ...(u.default !== undefined ? { default: u.default } : {}),
      required: !u.optional && !parentOptional,
      description: u.description ?? '',
      secret: u.secret || /pass(word)?|secret|token|private[-_]?key|cookie/i.test(path[path.length - 1] ?? ''),
    },
  ];
}

/** Turn an environment string into the kind the setting wants; what does not fit stays a string, so the schema reports it. */
export function coerceEnvValue(kind: SettingKind, raw: string): unknown {
  const v = raw.trim();
  if (kind === 'number') return v !== '' && Number.isFinite(Number(v)) ? Number(v) : raw;
  if (kind === 'boolean') {
    if (/^(true|1|yes|on)$/i.test(v)) return true;
    if (/^(false|0|no|off)$/i.test(v)) return false;
    return raw;
  }
  if (kind === 'json') {
    try {
      return JSON.parse(v);
    } catch {
      return raw;
    }
  }
  return raw;
}

export interface EnvOverride {
  env: string;
  path: string;
  /** read from the file the _FILE variable names */
  fromFile?: string;
}

export interface EnvProblem {
  path: string;
  message: string;
}

/**
 * Apply the environment to a parsed configuration object (mutates and returns it). A variable
 * overrides the file; `NAME_FILE` reads the value from a file and wins over `NAME`. Unreadable
 * secret files are problems reported with the rest, never thrown one at a time.
 */
export function applyEnv(
  target: Record<string, unknown>,
  settings: Setting[],
  env: NodeJS.ProcessEnv,
  readFile: (file: string) => string,
): { applied: EnvOverride[]; problems: EnvProblem[] } {
  const applied: EnvOverride[] = [];
  const problems: EnvProblem[] = [];
  for (const s of settings) {
    let raw: string | undefined;
    let fromFile: string | undefined;
    const fileVar = env[s.env + '_FILE'];
    if (fileVar !== undefined && fileVar !== '') {
      try {
        raw = readFile(fileVar).replace(/\r?\n$/, '');
        fromFile = fileVar;
      } catch (e) {
        problems.push({
          path: s.path,
          message: `${s.env}_FILE names "${fileVar}", which cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); 请检查密钥文件 check the secret file and its permissions`,
        });
        continue;
      }
    } else if (env[s.env] !== undefined) raw = env[s.env];
    if (raw === undefined) continue;
    setPath(target, s.path.split('.'), coerceEnvValue(s.kind, raw));
    applied.push({ env: fromFile ? s.env + '_FILE' : s.env, path: s.path, ...(fromFile ? { fromFile } : {}) });
  }
  return { applied, problems };
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}
