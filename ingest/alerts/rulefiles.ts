// Reading rule files from disk (the rules module itself does no I/O).
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { compileRules, LIBRARY_DIR, type RuleSet } from '../../rules/index.ts';

/** Every `*.yaml` / `*.yml` in the folders, in name order, as compileRules input. */
export async function loadRuleFiles(...dirs: string[]): Promise<{ file: string; text: string }[]> {
  const out: { file: string; text: string }[] = [];
  for (const dir of dirs) {
    const names = (await readdir(dir)).filter((f) => /\.ya?ml$/.test(f)).sort();
    for (const f of names) out.push({ file: join(dir, f), text: await readFile(join(dir, f), 'utf8') });
  }
  return out;
}

/** The built-in rules (rules/library), compiled; plus any extra folders. */
export async function loadLibrary(...extraDirs: string[]): Promise<RuleSet> {
  return compileRules(await loadRuleFiles(LIBRARY_DIR, ...extraDirs));
}
