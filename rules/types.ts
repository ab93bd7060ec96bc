// The compiled form of rules and calendars, and what the engine takes in and gives out.
import type { AlertCategory, Localized, Severity } from '../contract/index.ts';
import type { Expr, Params } from './language.ts';

export type Comparison = { op: 'above' | 'below'; value: Expr };

/** What a rule watches. */
export type Condition =
  | { kind: 'threshold'; metric: string; compare: Comparison; forMs: number; repeat?: Repeat }
  | { kind: 'range'; metric: string; mode: 'outside' | 'inside'; low: Expr; high: Expr; forMs: number; repeat?: Repeat }
  | { kind: 'rate'; metric: string; compare: Comparison; perMs: number; forMs: number; repeat?: Repeat }
  | { kind: 'absence'; forMs: number | null; factor: number; offline: boolean }
  | { kind: 'event'; types: string[]; where: Record<string, unknown>; repeat?: Repeat };

/** "N times within a window": counts rising edges of the condition (or matching events). */
export interface Repeat {
  count: number;
  withinMs: number;
}

export type ClearCondition =
  /** for metric rules: value-based clear with hysteresis */
  | { kind: 'value'; compare: Comparison | null; forMs: number }
  /** for event rules: a clearing event, or quiet for a time */
  | { kind: 'event'; types: string[]; quietMs: number | null }
  /** for absence rules: data again */
  | { kind: 'data' }
  /** only a person resolves it */
  | { kind: 'manual' };

export interface Composite {
  group: 'room' | 'building' | 'site';
  /** at least this many devices of the group; null = all devices of the group known to the engine */
  min: number | null;
  withinMs: number;
}

export type ScheduleWindow =
  | 'lesson-hours'
  | 'after-hours'
  | 'school-day'
  | 'non-school-day'
  | 'weekend'
  | 'holiday'
  | 'term'
  | 'vacation';
export const SCHEDULE_WINDOWS: readonly ScheduleWindow[] = [
  'lesson-hours',
  'after-hours',
  'school-day',
  'non-school-day',
  'weekend',
  'holiday',
  'term',
  'vacation',
];

export interface Schedule {
  calendar: string;
  during: ScheduleWindow[];
}

/** Linkage actions. Only emergencies carry them, and none of them can lock anything. */
export type Action =
  | { kind: 'release-gates'; target: 'building' | 'site' }
  | { kind: 'snapshot'; target: 'nearest-camera' | 'room-cameras' };

export interface Override {
  /** an org path prefix (37, 37/3701, …) or null when the override names a device */
  orgPath: string | null;
  /** a school id alone matches any path ending in it */
  schoolId: string | null;
  /** `gateway/device` or `device` */
  device: string | null;
  params: Params;
  /** depth used to order overrides: province 1, city 2, county 3, school 4, device 10 */
  depth: number;
}

export interface Selector {
  /** org path prefixes the rule applies to (empty = everywhere) */
  scopes: string[];
  profiles: string[];
  devices: string[];
}

export interface CompiledRule {
  id: string;
  /** content hash, so versions are comparable */
  version: string;
  file: string;
  name: Localized;
  description: Localized | null;
  category: AlertCategory;
  severity: Severity;
  enabled: boolean;
  when: Condition;
  clear: ClearCondition;
  composite: Composite | null;
  levels: { compare: Comparison; severity: Severity }[];
  params: Params;
  overrides: Override[];
  match: Selector;
  schedule: Schedule | null;
  /** escalate to the next tier up when nobody acknowledged within this time; null = never */
  escalateAfterMs: number | null;
  /**
   * re-arm hold (alert-state.ts): after this long without a new trigger the latch re-arms. null =
   * the default (10 min for rules only a person closes; none for rules that clear themselves).
   */
  rearmAfterMs: number | null;
  actions: Action[];
  /** the source text, kept for versions and diffs */
  source: string;
}

export interface CompiledCalendar {
  id: string;
  file: string;
  /** org path prefix the calendar belongs to; null = anywhere */
  orgPath: string | null;
  lessons: { from: number; to: number }[];
  weekends: number[];
  terms: { from: string; to: string }[];
  holidays: { from: string; to: string }[];
  workdays: string[];
}

export interface RuleError {
  file: string;
  rule: string | null;
  path: string;
  message: string;
}

export interface RuleSet {
  rules: CompiledRule[];
  calendars: CompiledCalendar[];
  errors: RuleError[];
}

/** What the engine needs to know about a device (from the devices table and the birth message). */
export interface DeviceInfo {
  gatewayId: string;
  deviceId: string;
  orgPath: string;
  profile?: string | null;
  building?: string | null;
  room?: string | null;
  expectedIntervalMs?: number | null;
  state?: 'online' | 'degraded' | 'offline' | string | null;
  lastSeen?: number | null;
  /** when watching began (e.g. the alerting's start): silence before it is not counted for raising */
  watchedSince?: number | null;
}

export interface EvalContext {
  gatewayId: string;
  /** the site (school) the gateway belongs to */
  orgPath: string;
  device?: DeviceInfo;
  /** the record comes from a drill's staged device (drills are marked by source, never by a site's window) */
  drill?: boolean;
}

/**
 * raised: a new alert. retriggered: the rule's condition held again while its latch was raised (a
 * rule only a person closes); the alert must be open, and is opened anew if the desk closed it
 * where the engine could not see. worsened: a higher severity. cleared: the rule's clear held.
 */
export type TransitionKind = 'raised' | 'retriggered' | 'worsened' | 'cleared';

export interface AlertTransition {
  kind: TransitionKind;
  /** rule + gateway + device (or group): one open alert per key */
  key: string;
  ruleId: string;
  ruleVersion: string;
  title: Localized;
  category: AlertCategory;
  severity: Severity;
  gatewayId: string;
  deviceId: string;
  orgPath: string;
  value: number | null;
  eventType: string | null;
  at: number;
  drill: boolean;
  actions: Action[];
  escalateAfterMs: number | null;
  /** why, for people */
  reason: Localized;
}

export interface EvaluationFault {
  ruleId: string;
  message: string;
}

export interface EngineResult {
  transitions: AlertTransition[];
  faults: EvaluationFault[];
}
