// Rule and calendar documents (YAML) → compiled rules, with every error reported at once as
// { file, rule, path, message }. Pure: takes text, returns data. One rule is compiled by
// compile-rule.ts; what a document may say is in compile-schema.ts.
import { parseAllDocuments } from 'yaml';
import { calendarSchema, dateRe, normaliseScope, pathOf, WEEKDAY } from './compile-schema.ts';
import { compileRule } from './compile-rule.ts';
import { parseClock, RuleLanguageError } from './language.ts';
import type { CompiledCalendar, CompiledRule, RuleError, RuleSet } from './types.ts';

export { normaliseScope } from './compile-schema.ts';

/** Compiled documents by (file, text): reloads of thousands of unchanged rules cost nothing. */
const docCache = new Map<string, { rules: CompiledRule[]; calendars: CompiledCalendar[]; errors: RuleError[] }>();

export function compileRules(docs: { file: string; text: string }[]): RuleSet {
  const out: RuleSet = { rules: [], calendars: [], errors: [] };
  const seen = new Map<string, string>();
  for (const { file, text } of docs) {
    const cacheKey = file + '\u0000' + text;
    let one = docCache.get(cacheKey);
    if (!one) {
      one = compileDocument(file, text);
      if (docCache.size > 50_000) docCache.clear();
      docCache.set(cacheKey, one);
    }
    out.errors.push(...one.errors);
    out.calendars.push(...one.calendars);
    for (const rule of one.rules) {
      const prior = seen.get(rule.id);
      if (prior) {
        out.errors.push({ file, rule: rule.id, path: 'id', message: `rule id "${rule.id}" is already defined in ${prior} / 规则编号重复` });
        continue;
      }
      seen.set(rule.id, file);
      out.rules.push(rule);
    }
  }
  finish(out);
  return out;
}

function compileDocument(file: string, text: string): { rules: CompiledRule[]; calendars: CompiledCalendar[]; errors: RuleError[] } {
  const out = { rules: [] as CompiledRule[], calendars: [] as CompiledCalendar[], errors: [] as RuleError[] };
  const seen = new Map<string, string>();
  {
    let parsed;
    try {
      parsed = parseAllDocuments(text);
    } catch (e) {
      out.errors.push({ file, rule: null, path: '(root)', message: `YAML: ${(e as Error).message}` });
      return out;
    }
    const list = (Array.isArray(parsed) ? parsed : [parsed]).filter((d): d is NonNullable<typeof d> => !!d);
    let docIndex = 0;
    for (const doc of list) {
      docIndex++;
      if (doc.errors.length) {
        for (const err of doc.errors) out.errors.push({ file, rule: null, path: `(document ${docIndex})`, message: `YAML: ${err.message}` });
        continue;
      }
      const value = doc.toJS() as unknown;
      if (value === null || value === undefined) continue;
      const items: unknown[] =
        value && typeof value === 'object' && !Array.isArray(value) && 'rules' in value && Array.isArray((value as { rules: unknown }).rules)
          ? (value as { rules: unknown[] }).rules
          : Array.isArray(value)
            ? value
            : [value];
      for (const item of items) {
        const src = items.length === 1 && list.length === 1 ? text : JSON.stringify(item);
        if (item && typeof item === 'object' && (item as { kind?: unknown }).kind === 'calendar') {
          const cal = compileCalendar(file, item, out.errors);
          if (cal) out.calendars.push(cal);
          continue;
        }
        const rule = compileRule(file, item, src, out.errors);
        if (!rule) continue;
        const prior = seen.get(rule.id);
        if (prior) {
          out.errors.push({ file, rule: rule.id, path: 'id', message: `rule id "${rule.id}" is already defined in ${prior} / 规则编号重复` });
          continue;
        }
        seen.set(rule.id, file);
        out.rules.push(rule);
      }
    }
  }
  return out;
}

function finish(out: RuleSet): void {
  // schedules must name a calendar that exists (or the built-in default)
  const calendarIds = new Set(['default', ...out.calendars.map((c) => c.id)]);
  for (const r of out.rules) {
    if (r.schedule && !calendarIds.has(r.schedule.calendar)) {
      out.errors.push({ file: r.file, rule: r.id, path: 'schedule.calendar', message: `calendar "${r.schedule.calendar}" is not defined; known: ${[...calendarIds].join(', ')} / 未定义的校历` });
    }
  }
  if (out.errors.length) {
    const bad = new Set(out.errors.map((e) => e.rule));
    out.rules = out.rules.filter((r) => !bad.has(r.id));
  }
}

function compileCalendar(file: string, item: unknown, errors: RuleError[]): CompiledCalendar | null {
  const r = calendarSchema.safeParse(item);
  const id = typeof (item as { id?: unknown })?.id === 'string' ? (item as { id: string }).id : null;
  if (!r.success) {
    for (const i of r.error.issues) errors.push({ file, rule: id, path: pathOf(i.path), message: i.message });
    return null;
  }
  const c = r.data;
  const errs: RuleError[] = [];
  const at = (path: string, f: () => void) => {
    try {
      f();
    } catch (e) {
      errs.push({ file, rule: c.id, path, message: (e as Error).message });
    }
  };
  const lessons: { from: number; to: number }[] = [];
  c.lessons.forEach((l, i) =>
    at(`lessons[${i}]`, () => {
      const [a, b] = l.split('-');
      if (!a || !b) throw new RuleLanguageError(`lesson "${l}" must be HH:MM-HH:MM`);
      const from = parseClock(a);
      const to = parseClock(b);
      if (to <= from) throw new RuleLanguageError(`lesson "${l}" ends before it starts`);
      lessons.push({ from, to });
    }),
  );
  const holidays: { from: string; to: string }[] = [];
  c.holidays.forEach((h, i) =>
    at(`holidays[${i}]`, () => {
      const [a, b] = h.split('..');
      if (!a || !dateRe.test(a) || (b !== undefined && !dateRe.test(b))) throw new RuleLanguageError(`holiday "${h}" must be YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD`);
      holidays.push({ from: a, to: b ?? a });
    }),
  );
  let orgPath: string | null = null;
  if (c.scope) at('scope', () => (orgPath = normaliseScope(c.scope!).orgPath));
  errors.push(...errs);
  if (errs.length) return null;
  return {
    id: c.id,
    file,
    orgPath,
    lessons,
    weekends: c.weekends.map((d) => WEEKDAY[d]),
    terms: c.terms,
    holidays,
    workdays: c.workdays,
  };
}
