// Schedule resolution: is a rule's `schedule` (calendar windows such as lesson-hours) open at a
// time, for a site? The calendars are replaced on reload.
import { calendarWindows, pickCalendar } from './calendar.ts';
import type { CompiledCalendar, CompiledRule } from './types.ts';

export class RuleSchedule {
  constructor(public calendars: readonly CompiledCalendar[] = []) {}
  /** true for rules without a schedule */
  open(r: CompiledRule, orgPath: string, ts: number): boolean {
    if (!r.schedule) return true;
    const w = calendarWindows(pickCalendar(this.calendars, r.schedule.calendar, orgPath), ts);
    return r.schedule.during.some((x) => w.has(x));
  }
}
