// The profile catalogue: YAML files in device-drivers/profiles/ (and optionally a site's own
// directory). Every file is validated; all problems are reported at once as `file: path: message`.
import { readdir, readFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { profileCapabilities, profileProblems, profileSchema, type Profile } from './profile-schema.ts';

/** An event declared `alarm: <kind>` is priority alarm unless the profile says otherwise; capabilities are derived once. */
function alarmsArePriority(p: Profile): Profile {
  const lift = (d: { alarm?: string; priority?: 'alarm' | 'normal' } | undefined) => {
    if (d?.alarm && !d.priority) d.priority = 'alarm';
  };
  if (p.protocol === 'modbus') for (const pt of p.points) [pt, ...(pt.bits ?? [])].forEach(lift);
  else if (p.protocol === 'mqtt') for (const m of p.mqtt.messages) lift(m.event);
  else p.onvif.events.forEach(lift);
  // what the birth message carries for each device of this model (edge/gateway.ts birth())
  return Object.assign(p, { capabilities: profileCapabilities(p) });
}
import { DriverError } from './types.ts';

export const BUILTIN_PROFILE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'profiles');

export class ProfileCatalogueError extends Error {
  constructor(readonly problems: string[]) {
    super(`设备型号文件有误 device profiles are invalid (${problems.length}):\n  ${problems.join('\n  ')}`);
    this.name = 'ProfileCatalogueError';
  }
}

/** Parse and check one profile text; returns the profile or the list of problems. */
export function parseProfile(file: string, text: string): { profile?: Profile; problems: string[] } {
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 50 });
  } catch (e) {
    return { problems: [`${file}: not valid YAML: ${(e as Error).message.split('\n')[0]}`] };
  }
  const r = profileSchema.safeParse(doc);
  if (!r.success) return { problems: r.error.issues.map((i) => `${file}: ${i.path.join('.') || '(top)'}: ${i.message}`) };
  const problems = profileProblems(r.data).map((m) => `${file}: ${m}`);
  return problems.length ? { problems } : { profile: alarmsArePriority(r.data), problems };
}

const cache = new Map<string, Promise<Profile[]>>();

/**
 * Every profile of the catalogue (built-in, plus `dirs` or `XIAOAN_PROFILES` — a site's own
 * models). Throws ProfileCatalogueError listing every problem if any file is invalid.
 */
export function loadProfiles(opts: { dirs?: string[]; reload?: boolean } = {}): Promise<Profile[]> {
  const extra = opts.dirs ?? (process.env.XIAOAN_PROFILES ? process.env.XIAOAN_PROFILES.split(':').filter(Boolean) : []);
  const dirs = [BUILTIN_PROFILE_DIR, ...extra];
  const key = dirs.join('\0');
  if (opts.reload || !cache.has(key)) {
    const p = readCatalogue(dirs);
    cache.set(key, p);
    p.catch(() => cache.delete(key));
  }
  return cache.get(key)!;
}

async function readCatalogue(dirs: string[]): Promise<Profile[]> {
  const problems: string[] = [];
  const byId = new Map<string, { profile: Profile; file: string }>();
  for (const dir of dirs) {
    let files: string[];
    try {
      files = (await readdir(dir)).filter((f) => f.endsWith('.yaml') || f.endsWith('.yml')).sort();
    } catch (e) {
      problems.push(`${dir}: cannot read the profile directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      continue;
    }
    for (const f of files) {
      const file = join(dir, f);
      const r = parseProfile(file, await readFile(file, 'utf8'));
      problems.push(...r.problems);
      if (!r.profile) continue;
      const stem = f.replace(/\.ya?ml$/, '');
      if (stem !== r.profile.id) problems.push(`${file}: id "${r.profile.id}" differs from the file name; name the file ${r.profile.id}.yaml`);
      const prev = byId.get(r.profile.id);
      if (prev) problems.push(`${file}: id "${r.profile.id}" is already defined in ${prev.file}`);
      byId.set(r.profile.id, { profile: r.profile, file });
    }
  }
  if (problems.length) throw new ProfileCatalogueError(problems);
  return [...byId.values()].map((v) => v.profile);
}

/** One profile by id; a DriverError `unknown_profile` names the known ones. */
export async function getProfile(id: string, opts: { dirs?: string[] } = {}): Promise<Profile> {
  const all = await loadProfiles(opts);
  const p = all.find((x) => x.id === id);
  if (!p)
    throw new DriverError(
      `未知设备型号 unknown device profile "${id}"; known: ${all.map((x) => x.id).join(', ')} (see \`xiaoan device profiles\`)`,
      'unknown_profile',
      false,
    );
  return p;
}
