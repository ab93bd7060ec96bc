// The profile format: one YAML file per device model (data, never code). A profile names the
// protocol and how the device's points map to Xiaoan metrics and events; the protocol driver reads
// it and never knows a product. `loadProfiles()` collects every problem of every file at once.
import { z } from 'zod';
import { ALARM_KINDS, POINT_CAPABILITIES, eventTypeSchema, localizedSchema, metricSchema, type DeviceCapabilities } from '../contract/index.ts';

/** `500ms`, `5s`, `2m`, `1h` or a number of milliseconds. */
export function parseDuration(v: string | number): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/.exec(v.trim());
  if (!m) throw new Error(`duration "${v}": write e.g. 500ms, 5s, 2m, 1h`);
  const n = Number(m[1]);
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h']);
}

const durationSchema = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

export const PRIORITIES = ['alarm', 'normal'] as const;
/**
 * Event types that need a person now: they carry priority `alarm` unless a profile says otherwise.
 * A profile says what its events are with `alarm: <kind>` (which also makes them priority alarm);
 * this list is the fallback for profiles of sites that declare nothing.
 */
export const ALARM_EVENT_TYPES = new Set(['smoke.alarm', 'gas.alarm', 'gate.forced_open', 'button.pressed', 'visitor.watchlist']);

export const CATEGORIES = ['fire', 'gas', 'environment', 'water', 'access', 'emergency', 'visitor', 'video', 'linkage'] as const;

const pollSchema = z.strictObject({
  interval: durationSchema,
  /** per metric: the smallest change the edge forwards (applied by the edge) */
  deadband: z.record(z.string(), z.number().nonnegative()).default({}),
  /** the edge sends every value at least this often, changed or not */
  integrity: durationSchema,
});

/** `alarm: fire` on an event declaration: the event is an alarm of that kind (and priority alarm). */
const alarmKind = z.enum(ALARM_KINDS).optional();
/** The value a capability writes (e.g. `true` on a release coil, `fire-alarm` as a gate's release reason). */
const writeValue = z.union([z.number(), z.boolean(), z.string().max(64)]);
/** `capability: evacuation-release` on a writable point or command: linkage writes it in a fire. */
const pointCapability = {
  capability: z.enum(POINT_CAPABILITIES).optional(),
  /** what the capability writes (default: true on a bool point; required otherwise) */
  capabilityValue: writeValue.optional(),
};

/** What to emit when a bool point, bit or enum value changes. */
const edgeEventSchema = z.strictObject({
  alarm: alarmKind,
  ...pointCapability,
  /** emitted on the rising edge (false → true), also when first seen true */
  event: eventTypeSchema.optional(),
  /** emitted on the falling edge (true → false) */
  clearEvent: eventTypeSchema.optional(),
  priority: z.enum(PRIORITIES).optional(),
  /** constant data carried by the event, e.g. { level: 1 } */
  data: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  /** also report the state as a reading 0/1 (default true) */
  reading: z.boolean().default(true),
});

export const MODBUS_TABLES = ['coil', 'discrete', 'holding', 'input'] as const;
export const REGISTER_TYPES = ['int16', 'uint16', 'int32', 'uint32', 'float32'] as const;
export type ModbusTable = (typeof MODBUS_TABLES)[number];
export type RegisterType = (typeof REGISTER_TYPES)[number];

const bitSchema = edgeEventSchema.extend({
  name: metricSchema,
  bit: z.number().int().min(0).max(31),
});

const modbusPointSchema = edgeEventSchema.extend({
  name: metricSchema,
  table: z.enum(MODBUS_TABLES),
  /** protocol address, 0-based (holding register 40001 is address 0) */
  address: z.number().int().min(0).max(65535),
  type: z.enum(['bool', ...REGISTER_TYPES, 'bitfield', 'enum']),
  /** underlying register type of a bitfield or enum (default uint16) */
  raw: z.enum(REGISTER_TYPES).optional(),
  /** byte order inside each 16-bit register (default: the profile's, else big endian) */
  byteOrder: z.enum(['BE', 'LE']).optional(),
  /** order of the two registers of a 32-bit value (default: the profile's, else high word first) */
  wordOrder: z.enum(['BE', 'LE']).optional(),
  scale: z.number().default(1),
  offset: z.number().default(0),
  unit: z.string().optional(),
  /** bit fields: each bit is a bool with its own name and events (in coils/discrete inputs: consecutive bits) */
  bits: z.array(bitSchema).optional(),
  /** coil or discrete-input bit fields: how many consecutive bits (default: highest bit + 1) */
  count: z.number().int().min(1).max(1968).optional(),
  /** enumerations: raw value → label; `events` maps a label to the event emitted on entering it */
  enum: z.record(z.string(), z.string()).optional(),
  events: z.record(z.string(), eventTypeSchema).optional(),
  writable: z.boolean().default(false),
  /** writable only: lower and upper bound of an accepted engineering value */
  min: z.number().optional(),
  max: z.number().optional(),
});
export type ModbusPoint = z.infer<typeof modbusPointSchema>;
export type BitPoint = z.infer<typeof bitSchema>;

const fieldMapSchema = z.record(z.string(), z.string());

const mqttMessageSchema = z.strictObject({
  /** sub-topic under `devices/{deviceId}/`, e.g. `state` or `event` */
  topic: z.string().regex(/^[a-z0-9_\-/]+$/, 'topic: lower-case sub-topic, no wildcards'),
  /** only payloads whose fields equal these values match, e.g. { type: forced_open } */
  match: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  readings: z
    .array(
      z.strictObject({
        metric: metricSchema,
        field: z.string(),
        /** map a string or bool state to a number, e.g. { open: 1, closed: 0 } */
        map: z.record(z.string(), z.number()).optional(),
        scale: z.number().default(1),
      }),
    )
    .optional(),
  event: z
    .strictObject({
      type: eventTypeSchema,
      priority: z.enum(PRIORITIES).optional(),
      alarm: alarmKind,
      /** event data key → payload field */
      data: fieldMapSchema.optional(),
    })
    .optional(),
});

const privacyFieldSchema = z.strictObject({
  field: z.string(),
  /** resident-id: GB 11643 checksum, masked and keyed-hashed; name: surname kept, rest masked */
  kind: z.enum(['resident-id', 'name']),
});

const mqttSchema = z.strictObject({
  messages: z.array(mqttMessageSchema).min(1),
  /** personal fields: validated, masked and hashed in the driver; never passed on in the clear */
  privacy: z.array(privacyFieldSchema).default([]),
  /** writable points: point → sub-topic and payload template (`$value` is replaced) */
  commands: z
    .record(z.string(), z.strictObject({ topic: z.string(), payload: z.record(z.string(), z.unknown()), ...pointCapability }))
    .default({}),
});

const onvifSchema = z.strictObject({
  /** ONVIF topic (as the camera sends it, namespace prefix ignored) → Xiaoan event */
  events: z
    .array(
      z.strictObject({
        topic: z.string(),
        type: eventTypeSchema,
        /** the SimpleItem that carries the state, e.g. IsMotion; the event fires when it turns true */
        stateItem: z.string().optional(),
        priority: z.enum(PRIORITIES).optional(),
        alarm: alarmKind,
      }),
    )
    .default([]),
  /** PullPoint subscription lifetime; renewed at half of it */
  subscriptionTtl: durationSchema.default(60_000),
  snapshot: z.boolean().default(true),
});

const base = {
  id: z.string().regex(/^[a-z0-9][a-z0-9-]{2,63}$/, 'id: lower case letters, digits and -'),
  description: localizedSchema,
  category: z.enum(CATEGORIES),
  vendor: z.string().optional(),
  model: z.string().optional(),
  poll: pollSchema,
};

export const profileSchema = z.discriminatedUnion('protocol', [
  z.strictObject({
    ...base,
    protocol: z.literal('modbus'),
    modbus: z
      .strictObject({
        byteOrder: z.enum(['BE', 'LE']).default('BE'),
        wordOrder: z.enum(['BE', 'LE']).default('BE'),
        /** gap of unused registers that may be read across to save a request */
        maxGap: z.number().int().min(0).max(16).default(4),
        timeout: durationSchema.default(1000),
        retries: z.number().int().min(0).max(5).default(1),
      })
      .default({ byteOrder: 'BE', wordOrder: 'BE', maxGap: 4, timeout: 1000, retries: 1 }),
    points: z.array(modbusPointSchema).min(1),
  }),
  z.strictObject({ ...base, protocol: z.literal('mqtt'), mqtt: mqttSchema }),
  z.strictObject({ ...base, protocol: z.literal('onvif'), onvif: onvifSchema }),
]);

export type Profile = z.infer<typeof profileSchema>;
export type ModbusProfile = Extract<Profile, { protocol: 'modbus' }>;
export type MqttProfile = Extract<Profile, { protocol: 'mqtt' }>;
export type OnvifProfile = Extract<Profile, { protocol: 'onvif' }>;

export function registerCount(p: { type: string; raw?: RegisterType }): number {
  const t = p.type === 'bitfield' || p.type === 'enum' ? (p.raw ?? 'uint16') : p.type;
  return t === 'int32' || t === 'uint32' || t === 'float32' ? 2 : 1;
}

/** Bits a coil / discrete-input bit field spans. */
export function bitFieldWidth(p: { count?: number; bits?: Array<{ bit: number }> }): number {
  return p.count ?? Math.max(0, ...(p.bits ?? []).map((b) => b.bit)) + 1;
}

/**
 * What a device of this profile can do, as the birth message carries it (contract
 * `deviceCapabilitiesSchema`): release points and their values, snapshots, alarm events by kind.
 */
export function profileCapabilities(p: Profile): DeviceCapabilities {
  const release: { point: string; value: string | number | boolean }[] = [];
  const alarms: Record<string, (typeof ALARM_KINDS)[number]> = {};
  const note = (d: { event?: string; alarm?: (typeof ALARM_KINDS)[number] } | undefined) => {
    if (d?.event && d.alarm) alarms[d.event] = d.alarm;
  };
  if (p.protocol === 'modbus') {
    for (const pt of p.points) {
      note(pt);
      if (pt.capability === 'evacuation-release') release.push({ point: pt.name, value: pt.capabilityValue ?? true });
      for (const b of pt.bits ?? []) {
        note(b);
        if (b.capability === 'evacuation-release') release.push({ point: b.name, value: b.capabilityValue ?? true });
      }
    }
  } else if (p.protocol === 'mqtt') {
    for (const m of p.mqtt.messages) if (m.event?.alarm) alarms[m.event.type] = m.event.alarm;
    for (const [point, c] of Object.entries(p.mqtt.commands)) if (c.capability === 'evacuation-release' && c.capabilityValue !== undefined) release.push({ point, value: c.capabilityValue });
  } else {
    for (const e of p.onvif.events) if (e.alarm) alarms[e.type] = e.alarm;
  }
  return {
    ...(release.length ? { 'evacuation-release': release } : {}),
    ...(p.protocol === 'onvif' && p.onvif.snapshot ? { snapshot: true } : {}),
    ...(Object.keys(alarms).length ? { alarms } : {}),
  };
}

/** Declarations of capabilities that cannot work: on a read-only point, without a value to write. */
function capabilityProblems(p: Profile): string[] {
  const out: string[] = [];
  const check = (at: string, d: { capability?: string; capabilityValue?: unknown }, writable: boolean, bool: boolean) => {
    if (!d.capability) {
      if (d.capabilityValue !== undefined) out.push(`${at}: capabilityValue without a capability`);
      return;
    }
    if (!writable) out.push(`${at}: capability ${d.capability} needs a writable point (linkage writes it)`);
    if (d.capabilityValue === undefined && !bool) out.push(`${at}: capability ${d.capability} needs capabilityValue (what linkage writes)`);
  };
  if (p.protocol === 'modbus') {
    p.points.forEach((pt, i) => {
      check(`points[${i}] ${pt.name}`, pt, pt.writable, pt.type === 'bool');
      (pt.bits ?? []).forEach((b, j) => check(`points[${i}].bits[${j}] ${b.name}`, b, pt.writable && (pt.table === 'coil'), true));
    });
  } else if (p.protocol === 'mqtt') {
    for (const [point, c] of Object.entries(p.mqtt.commands)) check(`mqtt.commands.${point}`, c, true, false);
  }
  return out;
}

/** Consistency checks a schema cannot express; each returns `path: message`. */
export function profileProblems(p: Profile): string[] {
  const out: string[] = capabilityProblems(p);
  if (p.protocol === 'modbus') {
    const names = new Set<string>();
    const used = new Map<string, string>();
    p.points.forEach((pt, i) => {
      const at = `points[${i}] ${pt.name}`;
      const bitNames = (pt.bits ?? []).map((b) => b.name);
      for (const n of [pt.name, ...bitNames]) {
        if (names.has(n)) out.push(`${at}: name "${n}" is used twice`);
        names.add(n);
      }
      const isBitTable = pt.table === 'coil' || pt.table === 'discrete';
      if (isBitTable && pt.type !== 'bool' && pt.type !== 'bitfield') out.push(`${at}: ${pt.table} points are type bool (or bitfield over consecutive bits)`);
      if (pt.count !== undefined && !(isBitTable && pt.type === 'bitfield')) out.push(`${at}: count is for bit fields in coils or discrete inputs`);
      if (!isBitTable && pt.type === 'bool') out.push(`${at}: a bool in a ${pt.table} register needs type bitfield with bits`);
      if (pt.type === 'bitfield' && !pt.bits?.length) out.push(`${at}: bitfield needs bits`);
      if (pt.type === 'bitfield') {
        const width = isBitTable ? bitFieldWidth(pt) : registerCount(pt) * 16;
        for (const b of pt.bits ?? []) if (b.bit >= width) out.push(`${at}: bit ${b.bit} is outside a ${width}-bit field`);
      }
      if (pt.type === 'enum' && !pt.enum) out.push(`${at}: enum needs an enum map`);
      if (pt.events && pt.type !== 'enum') out.push(`${at}: events by value are for enum points`);
      for (const label of Object.keys(pt.events ?? {}))
        if (!Object.values(pt.enum ?? {}).includes(label)) out.push(`${at}: events names "${label}", which is not one of the enum's labels`);
      if (pt.writable && (pt.table === 'discrete' || pt.table === 'input')) out.push(`${at}: ${pt.table} is read-only; writable points live in coils or holding registers`);
      if (pt.scale === 0) out.push(`${at}: scale must not be 0`);
      const n = isBitTable ? (pt.type === 'bitfield' ? bitFieldWidth(pt) : 1) : registerCount(pt);
      for (let k = 0; k < n; k++) {
        const key = `${isBitTable ? pt.table : pt.table}:${pt.address + k}`;
        if (used.has(key)) out.push(`${at}: ${pt.table} address ${pt.address + k} overlaps ${used.get(key)}`);
        used.set(key, pt.name);
      }
      if (pt.address + n - 1 > 65535) out.push(`${at}: runs past address 65535`);
    });
  }
  if (p.protocol === 'mqtt') {
    p.mqtt.messages.forEach((m, i) => {
      if (!m.readings?.length && !m.event) out.push(`mqtt.messages[${i}]: declares neither readings nor event`);
    });
  }
  for (const k of Object.keys(p.poll.deadband)) {
    if (p.protocol === 'modbus' && !p.points.some((pt) => pt.name === k || pt.bits?.some((b) => b.name === k)))
      out.push(`poll.deadband.${k}: no point of that name`);
  }
  return out;
}
