// What every condition evaluator works with: the state store, the latch driver, parameters after
// overrides and schedules. One object, built once by createRuleEngine, passed to each unit.
import type { KeyStore } from './key-store.ts';
import type { LatchDriver } from './latch-driver.ts';
import type { ParamCache } from './overrides.ts';
import type { RuleIndex } from './rule-index.ts';
import type { RuleSchedule } from './schedule.ts';

export interface EngineCore {
  store: KeyStore;
  latches: LatchDriver;
  params: ParamCache;
  schedule: RuleSchedule;
  /** replaced on reload */
  idx: RuleIndex;
}

/** `rule|gateway|subject`: one open alert per key */
export const keyOf = (ruleId: string, gatewayId: string, subject: string): string => `${ruleId}|${gatewayId}|${subject}`;
