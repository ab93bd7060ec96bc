// Wire format, version 1 (edge → ingest, ingest → edge) and the alert shape every tier shares.
// Every message carries `v: 1`; a consumer rejects versions it does not speak with a clear error.
//
// Delivery is at least once. Each reading and each event carries a per-gateway sequence number
// `seq` that the gateway assigns when it first writes the record to its on-disk buffer and that
// only ever increases (persisted across restarts). Ingest stores a record only if
// (gateway, seq) is new — whatever its timestamp — so every record lands exactly once however
// often it is redelivered.
//
// Custody (docs/delivery.md): the gateway deletes a record only when the centre's receipt names
// its seq, sent on `…/{gatewayId}/receipt` after the storage commit. Records without a receipt
// are sent again after a timeout, whatever the broker did with them. Each batch carries the
// gateway's `floor`: every seq below it has been receipted (or was never sent), so the centre
// need remember stored seqs only from the floor up.

import { z } from 'zod';
import { ID_PATTERN } from './topics.ts';

export const deviceIdSchema = z.string().regex(ID_PATTERN, 'device id: 1–64 letters, digits, . _ - (no / + #)');
export const gatewayIdSchema = z.string().regex(ID_PATTERN, 'gateway id: 1–64 letters, digits, . _ - (no / + #)');
/** metric names: lower snake case, e.g. smoke_density, temperature, lel_percent */
export const metricSchema = z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, 'metric: lower snake case, at most 64 characters');
/** event types: dotted lower case, e.g. smoke.alarm, gate.forced_open, onvif.tamper */
export const eventTypeSchema = z.string().regex(/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/, 'event type: dotted lower case, e.g. smoke.alarm');
/** epoch milliseconds, between 2000-01-01 and 2100-01-01 */
export const timestampSchema = z.number().int().min(946_684_800_000).max(4_102_444_800_000);
export const seqSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const QUALITIES = ['good', 'uncertain', 'bad'] as const;
export type Quality = (typeof QUALITIES)[number];

export const readingSchema = z.strictObject({
  seq: seqSchema,
  device: deviceIdSchema,
  metric: metricSchema,
  ts: timestampSchema,
  value: z.number().finite(),
  quality: z.enum(QUALITIES).default('good'),
});
export type Reading = z.infer<typeof readingSchema>;

/** Upper bound of records in one uplink batch; keeps a message under ~1 MB. */
export const MAX_BATCH = 5000;

/**
 * The lowest seq the gateway still holds without a receipt when it sent the batch (its buffer's
 * oldest record). Every seq below it is in the centre's custody or was never sent (dropped at a
 * full buffer, quarantined as invalid), so a record below the highest floor seen is a duplicate.
 */
export const floorSchema = seqSchema.optional();

export const readingBatchSchema = z.strictObject({
  v: z.literal(1),
  gateway: gatewayIdSchema,
  sentAt: timestampSchema,
  floor: floorSchema,
  readings: z.array(readingSchema).min(1).max(MAX_BATCH),
});
export type ReadingBatch = z.infer<typeof readingBatchSchema>;

export const SEVERITIES = ['info', 'minor', 'major', 'critical', 'fatal'] as const;
export type Severity = (typeof SEVERITIES)[number];
export const severityRank = (s: Severity): number => SEVERITIES.indexOf(s);

export const deviceEventSchema = z.strictObject({
  seq: seqSchema,
  device: deviceIdSchema,
  type: eventTypeSchema,
  ts: timestampSchema,
  /** events that need a person now (alarms) jump every queue on the way */
  priority: z.enum(['alarm', 'normal']).default('normal'),
  /** set by a drill (教育演练): carried end to end, never mistaken for a real alarm */
  drill: z.boolean().default(false),
  data: z.record(z.string(), z.unknown()).default({}),
});
export type DeviceEvent = z.infer<typeof deviceEventSchema>;

export const eventBatchSchema = z.strictObject({
  v: z.literal(1),
  gateway: gatewayIdSchema,
  sentAt: timestampSchema,
  floor: floorSchema,
  events: z.array(deviceEventSchema).min(1).max(MAX_BATCH),
});
export type EventBatch = z.infer<typeof eventBatchSchema>;

/** Inclusive seq ranges `[from, to]`, ascending; every integer in a range is meant. */
export const seqRangesSchema = z
  .array(z.tuple([seqSchema, seqSchema]).refine(([a, b]) => a <= b, { message: 'range [from, to] needs from <= to' }))
  .min(1)
  .max(MAX_BATCH);

/**
 * Centre → gateway on `…/{gatewayId}/receipt` (QoS 1, not retained), published after the storage
 * commit: the centre holds every seq in `seqs` (stored now, stored before, or kept as a dead
 * letter it can replay). The gateway deletes exactly these from its buffer; nothing else does.
 */
export const receiptSchema = z.strictObject({
  v: z.literal(1),
  gateway: gatewayIdSchema,
  ts: timestampSchema,
  seqs: seqRangesSchema,
});
export type Receipt = z.infer<typeof receiptSchema>;

/** Ascending seqs (any order, duplicates allowed) as the fewest inclusive ranges. */
export function toSeqRanges(seqs: Iterable<number>): Array<[number, number]> {
  const sorted = [...seqs].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1] + 1) last[1] = Math.max(last[1], s);
    else out.push([s, s]);
  }
  return out;
}

export const HEALTH_STATES = ['online', 'degraded', 'offline'] as const;
export type HealthState = (typeof HEALTH_STATES)[number];

/** Retained on `status`; the broker publishes the last will `{state: 'offline'}` when a gateway drops. */
/** Kinds of alarm a device's event can be (declared in its profile; the desk and rules read them). */
export const ALARM_KINDS = ['fire', 'gas', 'intrusion', 'panic', 'visitor-watchlist', 'water', 'tamper'] as const;
export type AlarmKind = (typeof ALARM_KINDS)[number];
/** What linkage may write on a device: the only capability that writes, and it only ever opens. */
export const POINT_CAPABILITIES = ['evacuation-release'] as const;
export type PointCapability = (typeof POINT_CAPABILITIES)[number];

/**
 * What a device can do, from its profile (carried by the birth message, stored with the device).
 * Linkage, alarm handling and pages act on these, never on a model name. Bounded: a birth stays small.
 */
export const deviceCapabilitiesSchema = z.strictObject({
  /** points to write to release the device for evacuation (GB 50116-2013), each with its value */
  'evacuation-release': z
    .array(z.strictObject({ point: z.string().min(1).max(64), value: z.union([z.number(), z.boolean(), z.string().max(64)]) }))
    .min(1)
    .max(16)
    .optional(),
  /** the device takes still images (a camera) */
  snapshot: z.boolean().optional(),
  /** its events that are alarms: event type → kind */
  alarms: z
    .record(eventTypeSchema, z.enum(ALARM_KINDS))
    .refine((o) => Object.keys(o).length <= 32, { message: 'at most 32 alarm event types per device' })
    .optional(),
});
export type DeviceCapabilities = z.infer<typeof deviceCapabilitiesSchema>;

export const gatewayStatusSchema = z.strictObject({
  v: z.literal(1),
  gateway: gatewayIdSchema,
  state: z.enum(['online', 'offline']),
  ts: timestampSchema,
  version: z.string().max(64).optional(),
  /** set on birth: the gateway's devices, so the centre knows what to expect */
  devices: z
    .array(
      z.strictObject({
        id: deviceIdSchema,
        profile: z.string().max(128),
        name: z.string().max(200).optional(),
        state: z.enum(HEALTH_STATES),
        lastSeen: timestampSchema.nullable(),
        /** expected reporting interval (integrity report), ms; absence rules use it */
        expectedIntervalMs: z.number().int().positive().optional(),
        location: z.string().max(200).optional(),
        /** where it is on the site: linkage releases the gates of a building, the desk filters by it */
        building: z.string().max(100).optional(),
        room: z.string().max(100).optional(),
        /** what the device can do, from its profile (optional: older gateways send none) */
        capabilities: deviceCapabilitiesSchema.optional(),
      }),
    )
    .optional(),
  buffer: z.strictObject({ depth: z.number().int().nonnegative(), dropped: z.number().int().nonnegative() }).optional(),
});
export type GatewayStatus = z.infer<typeof gatewayStatusSchema>;

/** Downlink command on `cmd/{kind}`, answered on `cmd-result`. */
export const commandSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    v: z.literal(1),
    id: z.string().min(1).max(64),
    kind: z.literal('device.write'),
    device: deviceIdSchema,
    /** a point the device's profile declares writable, e.g. `unlock` on a gate */
    point: z.string().min(1).max(64),
    value: z.union([z.number(), z.boolean(), z.string().max(256)]),
    issuedBy: z.string().max(128),
    issuedAt: timestampSchema,
  }),
  z.strictObject({
    v: z.literal(1),
    id: z.string().min(1).max(64),
    kind: z.literal('device.upsert'),
    device: z.record(z.string(), z.unknown()),
    issuedBy: z.string().max(128),
    issuedAt: timestampSchema,
  }),
  z.strictObject({
    v: z.literal(1),
    id: z.string().min(1).max(64),
    kind: z.literal('rebirth'),
    issuedBy: z.string().max(128),
    issuedAt: timestampSchema,
  }),
  /** stop polling an enrolled device and delete it from the gateway's registry */
  z.strictObject({
    v: z.literal(1),
    id: z.string().min(1).max(64),
    kind: z.literal('device.remove'),
    device: deviceIdSchema,
    issuedBy: z.string().max(128),
    issuedAt: timestampSchema,
  }),
  /**
   * live test, nothing saved: `device` (an enrolled device's id) or `spec` (an unsaved enrolment,
   * same fields as device.upsert) — exactly one. The result's `data` holds the test's outcome.
   */
  z
    .strictObject({
      v: z.literal(1),
      id: z.string().min(1).max(64),
      kind: z.literal('device.test'),
      device: deviceIdSchema.optional(),
      spec: z.record(z.string(), z.unknown()).optional(),
      issuedBy: z.string().max(128),
      issuedAt: timestampSchema,
    })
    .refine((c) => (c.device === undefined) !== (c.spec === undefined), { message: 'device.test takes exactly one of device (an enrolled id) or spec (an unsaved device)', path: ['device'] }),
  /**
   * look for devices on the school's network: ONVIF cameras by WS-Discovery (target: optional
   * HOST[:PORT] to probe by unicast, else the multicast group), Modbus units on a port (target: a
   * modbus-tcp:// or modbus-rtu:// URL, required; units: which unit ids to ask). timeoutMs bounds
   * the whole search. The result's `data.found` lists what answered.
   */
  z.strictObject({
    v: z.literal(1),
    id: z.string().min(1).max(64),
    kind: z.literal('device.discover'),
    protocol: z.enum(['onvif', 'modbus']),
    target: z.string().min(1).max(512).optional(),
    units: z.array(z.number().int().min(0).max(255)).min(1).max(256).optional(),
    timeoutMs: z.number().int().min(100).max(120_000).optional(),
    issuedBy: z.string().max(128),
    issuedAt: timestampSchema,
  }),
]);
export type Command = z.infer<typeof commandSchema>;

/** Upper bound of a command result's `data` as JSON text (keeps a result far below the broker's packet limit). */
export const MAX_COMMAND_DATA = 256 * 1024;

export const commandResultSchema = z.strictObject({
  v: z.literal(1),
  id: z.string().min(1).max(64),
  ok: z.boolean(),
  message: z.string().max(1000).optional(),
  /** what a command observed (device.test: the test result; device.discover: what was found); never secrets */
  data: z
    .record(z.string(), z.unknown())
    .refine((d) => JSON.stringify(d).length <= MAX_COMMAND_DATA, { message: `data: at most ${MAX_COMMAND_DATA} characters of JSON` })
    .optional(),
  ts: timestampSchema,
});
export type CommandResult = z.infer<typeof commandResultSchema>;

export const ALERT_CATEGORIES = ['hazard', 'emergency'] as const;
export type AlertCategory = (typeof ALERT_CATEGORIES)[number];
export const ALERT_STATES = ['raised', 'acknowledged', 'resolved', 'cleared'] as const;
export type AlertState = (typeof ALERT_STATES)[number];

export const localizedSchema = z.strictObject({ zh: z.string(), en: z.string() });
export type Localized = z.infer<typeof localizedSchema>;

export const alertSchema = z.strictObject({
  id: z.string(),
  ruleId: z.string(),
  title: localizedSchema,
  category: z.enum(ALERT_CATEGORIES),
  severity: z.enum(SEVERITIES),
  state: z.enum(ALERT_STATES),
  drill: z.boolean(),
  /** org path of the site (school or college) the device belongs to */
  orgPath: z.string(),
  gatewayId: gatewayIdSchema,
  deviceId: deviceIdSchema,
  /** the value or event that raised it */
  value: z.number().nullable(),
  eventType: z.string().nullable(),
  raisedAt: timestampSchema,
  acknowledgedAt: timestampSchema.nullable(),
  acknowledgedBy: z.string().nullable(),
  resolvedAt: timestampSchema.nullable(),
  resolvedBy: z.string().nullable(),
  /** the tier the alert has been escalated to (org path), when nobody acknowledged in time */
  escalatedTo: z.string().nullable(),
  updatedAt: timestampSchema,
});
export type Alert = z.infer<typeof alertSchema>;

/** A schema failure as one line a person can act on: `readings[3].ts: Too small …`. */
export function describeZodError(err: z.ZodError): string {
  return err.issues
    .slice(0, 10)
    .map((i) => `${i.path.length ? i.path.join('.').replace(/\.(\d+)/g, '[$1]') : '(root)'}: ${i.message}`)
    .join('; ');
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: string };

/** Parse a raw uplink payload (bytes) against a schema; never throws. */
export function parsePayload<T>(schema: z.ZodType<T>, payload: Buffer | string): ParseResult<T> {
  let json: unknown;
  try {
    json = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
  } catch (e) {
    return { ok: false, error: `payload is not JSON: ${(e as Error).message}` };
  }
  if (json && typeof json === 'object' && 'v' in json && (json as { v: unknown }).v !== 1) {
    return { ok: false, error: `wire version ${JSON.stringify((json as { v: unknown }).v)} is not supported; this build speaks v: 1` };
  }
  const r = schema.safeParse(json);
  return r.success ? { ok: true, value: r.data } : { ok: false, error: describeZodError(r.error) };
}
