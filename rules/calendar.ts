// School calendar windows (Asia/Shanghai): lesson hours, after hours, school days, weekends,
// holidays, terms. Each school or county may set its own calendar; the nearest one by org path wins.
import { shanghaiTime } from './language.ts';
import type { CompiledCalendar, ScheduleWindow } from './types.ts';

/** Built-in calendar used when no school, county or city calendar is defined. */
export const DEFAULT_CALENDAR: CompiledCalendar = {
  id: 'default',
  file: '(built-in)',
  orgPath: null,
  lessons: [
    { from: 8 * 60, to: 11 * 60 + 50 },
    { from: 14 * 60, to: 17 * 60 + 30 },
  ],
  weekends: [0, 6],
  // an empty term list means "always in term"
  terms: [],
  holidays: [],
  workdays: [],
};

const within = (d: string, r: { from: string; to: string }) => d >= r.from && d <= r.to;

export function calendarWindows(cal: CompiledCalendar, epochMs: number): Set<ScheduleWindow> {
  const t = shanghaiTime(epochMs);
  const out = new Set<ScheduleWindow>();
  const holiday = cal.holidays.some((h) => within(t.date, h));
  const makeUpDay = cal.workdays.includes(t.date);
  const weekend = cal.weekends.includes(t.weekday) && !makeUpDay;
  const term = cal.terms.length === 0 || cal.terms.some((r) => within(t.date, r));
  const schoolDay = term && !holiday && !weekend;
  const lesson = schoolDay && cal.lessons.some((l) => t.minutes >= l.from && t.minutes < l.to);
  if (holiday) out.add('holiday');
  if (weekend) out.add('weekend');
  out.add(term ? 'term' : 'vacation');
  out.add(schoolDay ? 'school-day' : 'non-school-day');
  out.add(lesson ? 'lesson-hours' : 'after-hours');
  return out;
}

/** The calendar for a site: the one with the longest org path prefix among those with the id. */
export function pickCalendar(calendars: readonly CompiledCalendar[], id: string, orgPath: string): CompiledCalendar {
  let best: CompiledCalendar | null = null;
  for (const c of calendars) {
    if (c.id !== id) continue;
    if (c.orgPath !== null && !(orgPath === c.orgPath || orgPath.startsWith(c.orgPath + '/'))) continue;
    if (!best || (c.orgPath?.length ?? 0) > (best.orgPath?.length ?? 0)) best = c;
  }
  return best ?? DEFAULT_CALENDAR;
}
