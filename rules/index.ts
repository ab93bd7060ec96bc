// rules/ — the rule language, compiler, evaluator and backtest. Pure: no I/O, no clock of its
// own; imports only contract. The alerting tier (ingest/alerts) feeds it and stores what it says.
import { fileURLToPath } from 'node:url';

export { compileRules, normaliseScope } from './compile.ts';
export { createRuleEngine, latchRuleOf, resolveParams, type RuleEngine, type EngineSnapshot, type KeyState, type EngineOptions } from './engine.ts';
export { SeqGuard, DEFAULT_SEQ_HORIZON_MS, type SeqSnapshotEntry } from './seq-guard.ts';
export { calendarWindows, pickCalendar, DEFAULT_CALENDAR } from './calendar.ts';
export { parseDuration, parseExpr, shanghaiTime, RuleLanguageError, type Expr, type Params } from './language.ts';
export { backtest, parseSweep, withParams, type BacktestRecord, type BacktestResult, type Sweep } from './backtest.ts';
export { diffLines } from './diff.ts';
export * from './types.ts';

/** Folder of the built-in rules (`*.yaml`); the alerting tier reads it. */
export const LIBRARY_DIR = fileURLToPath(new URL('./library/', import.meta.url));
export * from './alert-state.ts';
