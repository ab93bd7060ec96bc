// Shandong's traffic model: the numbers docs/scaling.md's arithmetic starts from and
// bench/province.ts simulates (scaled down). test/deploy-scaling.test.ts checks the document
// quotes these same figures.
export const PROVINCE = {
  gateways: 40_000,
  devices: 2_000_000,
  cities: 16,
  /** by exception: an average device crosses its deadband once every 20 s */
  exceptionIntervalS: 20,
  /** plus an integrity report of every point (2 metrics on average) every 5 minutes */
  integrityIntervalS: 300,
  metricsPerDevice: 2,
  /** events (visitor check-ins, doors, motion, device health): one per gateway per minute */
  eventsPerGatewayPerMinute: 1,
  /** a gateway flushes its buffer at least once a second */
  flushIntervalS: 1,
} as const;
export const DEVICES_PER_GATEWAY = PROVINCE.devices / PROVINCE.gateways; // 50
/** readings/s one gateway sends on average: 50/20 + 50×2/300 = 2.83 */
export const READINGS_PER_GATEWAY_S =
  DEVICES_PER_GATEWAY / PROVINCE.exceptionIntervalS + (DEVICES_PER_GATEWAY * PROVINCE.metricsPerDevice) / PROVINCE.integrityIntervalS;
export const PROVINCE_READINGS_S = READINGS_PER_GATEWAY_S * PROVINCE.gateways;
/**
 * The per-worker figure the arithmetic in docs/scaling.md uses: readings/s one ingest worker
 * process (one core of worker CPU, rules on) sustains with the province's message shape when the
 * database keeps up. bench:province measures the worker's CPU per reading and checks that one
 * core covers at least this much.
 */
export const ASSUMED_WORKER_RPS = 10_000;

/** events/s of the province: one per gateway per minute */
export const PROVINCE_EVENTS_S = (PROVINCE.gateways * PROVINCE.eventsPerGatewayPerMinute) / 60;
/** uplink messages/s of the province: one reading batch per gateway per flush, plus event batches */
export const PROVINCE_MESSAGES_S = PROVINCE.gateways / PROVINCE.flushIntervalS + PROVINCE_EVENTS_S;
