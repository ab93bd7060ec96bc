// ingest/alerts — alert store, lifecycle, escalation, drills, outbox delivery to the provincial
// hazard and emergency modules, linkage, and the reference receiver.
export { createAlerting, nextTier, type Alerting, type AlertingOptions, type DrillInfo, type AlertAction } from './alerting.ts';
export { AlertError, ALERT_CHANNEL, type AlertView, type AlertFilter, type HistoryEntry, type DeliveryPayload } from './store.ts';
export { signDelivery, verifySignature, retryableStatus, SIGNATURE_HEADER, TIMESTAMP_HEADER, IDEMPOTENCY_HEADER, type DeliveryOptions, type DeliveryStats } from './delivery.ts';
export { startReferenceReceiver, type ReferenceReceiver, type ReceivedDelivery } from './receiver.ts';
export { type LinkageOptions } from './linkage.ts';
export { loadRuleFiles, loadLibrary } from './rulefiles.ts';
export { backtestOnHistory, formatBacktest, type BacktestRequest } from './backtest.ts';
export { createRulebook, RuleChangeError, RULE_CHANNEL, type Rulebook, type RulebookOptions, type RuleVersion } from './rulebook.ts';
export { grabStill, SnapshotError } from './snapshot.ts';
