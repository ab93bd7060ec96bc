// What a rule or calendar document may say (zod schemas), and how scopes written in rules read.
import { z } from 'zod';
import { SEVERITIES, ALERT_CATEGORIES, parseOrgPath } from '../contract/index.ts';

const localized = z.strictObject({ zh: z.string().min(1), en: z.string().min(1) });
const num = z.union([z.number(), z.string()]);
const durationStr = z.string({ error: 'a duration such as "10s" (ms, s, m, h, d) / 时长，如 "10s"' });
const idSchema = z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'rule id: lower case letters, digits and "-" (e.g. smoke-sustained)');

export const whenSchema = z.strictObject({
  metric: z.string().optional(),
  above: num.optional(),
  below: num.optional(),
  outside: z.tuple([num, num]).optional(),
  inside: z.tuple([num, num]).optional(),
  rate: z.strictObject({ above: num.optional(), below: num.optional(), per: z.string().default('1m') }).optional(),
  for: durationStr.optional(),
  count: z.number().int().min(1).optional(),
  within: durationStr.optional(),
  event: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  where: z.record(z.string(), z.unknown()).optional(),
  absent: z
    .strictObject({ for: durationStr.optional(), factor: z.number().positive().optional(), offline: z.boolean().optional() })
    .optional(),
  composite: z
    .strictObject({
      group: z.enum(['room', 'building', 'site']),
      all: z.boolean().optional(),
      min: z.number().int().min(1).optional(),
      within: durationStr,
    })
    .optional(),
});

export const clearSchema = z.strictObject({
  below: num.optional(),
  above: num.optional(),
  for: durationStr.optional(),
  event: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  quiet: durationStr.optional(),
  manual: z.boolean().optional(),
});

const actionSchema = z.union(
  [z.strictObject({ 'release-gates': z.enum(['building', 'site']) }), z.strictObject({ snapshot: z.enum(['nearest-camera', 'room-cameras']) })],
  { error: 'an action is { release-gates: building|site } or { snapshot: nearest-camera|room-cameras }; nothing may lock a door / 联动动作只能开启门禁或抓拍' },
);

export const ruleSchema = z.strictObject({
  kind: z.literal('rule').optional(),
  id: idSchema,
  name: localized,
  description: localized.optional(),
  category: z.enum(ALERT_CATEGORIES),
  severity: z.enum(SEVERITIES),
  enabled: z.boolean().default(true),
  match: z
    .strictObject({
      scope: z.union([z.string(), z.array(z.string())]).optional(),
      profiles: z.array(z.string()).optional(),
      devices: z.array(z.string()).optional(),
    })
    .optional(),
  when: whenSchema,
  clear: clearSchema.optional(),
  severities: z.array(z.strictObject({ above: num.optional(), below: num.optional(), severity: z.enum(SEVERITIES) })).optional(),
  params: z.record(z.string(), z.number()).default({}),
  overrides: z
    .array(
      z.strictObject({
        scope: z.string().optional(),
        device: z.string().optional(),
        params: z.record(z.string(), z.number()),
      }),
    )
    .default([]),
  schedule: z
    .strictObject({ calendar: z.string().default('default'), during: z.array(z.string()).min(1) })
    .optional(),
  escalate: z.strictObject({ after: durationStr }).optional(),
  /** re-arm the rule's latch this long after its last trigger (default 10m for rules only a person closes) */
  rearm: z.strictObject({ after: durationStr }).optional(),
  actions: z.array(actionSchema).default([]),
});

export const dateRe = /^\d{4}-\d{2}-\d{2}$/;
export const calendarSchema = z.strictObject({
  kind: z.literal('calendar'),
  id: idSchema,
  scope: z.string().optional(),
  timezone: z.literal('Asia/Shanghai').default('Asia/Shanghai'),
  lessons: z.array(z.string()).min(1),
  weekends: z.array(z.enum(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])).default(['sat', 'sun']),
  terms: z.array(z.strictObject({ from: z.string().regex(dateRe), to: z.string().regex(dateRe) })).default([]),
  holidays: z.array(z.string()).default([]),
  workdays: z.array(z.string().regex(dateRe)).default([]),
});

export const WEEKDAY = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 } as const;

export function pathOf(p: readonly PropertyKey[]): string {
  return p.map((x) => (typeof x === 'number' ? `[${x}]` : String(x))).join('.').replace(/\.\[/g, '[') || '(root)';
}

/** A scope written in a rule: '37', '3701', '370102', an org path, or a 10-digit school id. */
export function normaliseScope(text: string): { orgPath: string | null; schoolId: string | null; depth: number } {
  const t = text.trim();
  if (/^\d{10}$/.test(t)) return { orgPath: null, schoolId: t, depth: 4 };
  if (/^\d{2}$/.test(t)) return { orgPath: t, schoolId: null, depth: 1 };
  if (/^\d{4}$/.test(t)) {
    parseOrgPath(`${t.slice(0, 2)}/${t}`);
    return { orgPath: `${t.slice(0, 2)}/${t}`, schoolId: null, depth: 2 };
  }
  if (/^\d{6}$/.test(t)) {
    const p = `${t.slice(0, 2)}/${t.slice(0, 4)}/${t}`;
    parseOrgPath(p);
    return { orgPath: p, schoolId: null, depth: 3 };
  }
  const ref = parseOrgPath(t);
  return { orgPath: t, schoolId: null, depth: t.split('/').length + (ref.level === 'college' ? 1 : 0) };
}

export type RuleDoc = z.infer<typeof ruleSchema>;
