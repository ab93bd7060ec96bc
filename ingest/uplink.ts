// An uplink batch, read in two steps: the envelope (v, gateway, sentAt, floor, the list), then each
// record alone. A bad envelope rejects the message; a bad record is set aside alone and the batch's
// other records are kept (one poison record never sends its 4,999 neighbours to dead letters).
// Used by the worker and by `xiaoan deadletters replay`, so both read a payload the same way.
import { z } from 'zod';
import {
  deviceEventSchema,
  eventBatchSchema,
  MAX_BATCH,
  parsePayload,
  readingBatchSchema,
  readingSchema,
  seqSchema,
  type DeviceEvent,
  type Reading,
} from '../contract/index.ts';

export type UplinkKind = 'readings' | 'events';

/** One record that broke the schema while its envelope was fine. */
export interface RejectedRecord {
  index: number;
  /** its seq when that much is readable (then the centre can receipt it), else null */
  seq: number | null;
  record: unknown;
  /** `readings[3].metric: …` */
  detail: string;
}

export type ParsedUplink =
  | { ok: false; reason: 'not_json' | 'schema'; detail: string }
  | {
      ok: true;
      kind: UplinkKind;
      gateway: string;
      sentAt: number;
      floor?: number;
      readings: Reading[];
      events: DeviceEvent[];
      rejected: RejectedRecord[];
    };

const envelopes = {
  readings: readingBatchSchema.extend({ readings: z.array(z.unknown()).min(1).max(MAX_BATCH) }),
  events: eventBatchSchema.extend({ events: z.array(z.unknown()).min(1).max(MAX_BATCH) }),
};
type Envelope = { gateway: string; sentAt: number; floor?: number; readings?: unknown[]; events?: unknown[] };

export function parseUplinkBatch(kind: UplinkKind, payload: Buffer | string): ParsedUplink {
  const env = parsePayload(envelopes[kind] as unknown as z.ZodType<Envelope>, payload);
  if (!env.ok) return { ok: false, reason: env.error.startsWith('payload is not JSON') ? 'not_json' : 'schema', detail: `${kind}: ${env.error}` };
  const schema = kind === 'readings' ? readingSchema : deviceEventSchema;
  const good: Array<Reading | DeviceEvent> = [];
  const rejected: RejectedRecord[] = [];
  (env.value[kind] ?? []).forEach((rec, index) => {
    const r = schema.safeParse(rec);
    if (r.success) {
      good.push(r.data);
      return;
    }
    const seq = seqSchema.safeParse((rec as { seq?: unknown } | null)?.seq);
    const detail = r.error.issues
      .slice(0, 5)
      .map((i) => `${kind}[${index}]${i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')}: ${i.message}`)
      .join('; ');
    rejected.push({ index, seq: seq.success ? seq.data : null, record: rec, detail });
  });
  const { gateway, sentAt, floor } = env.value;
  return {
    ok: true,
    kind,
    gateway,
    sentAt,
    ...(floor !== undefined ? { floor } : {}),
    readings: kind === 'readings' ? (good as Reading[]) : [],
    events: kind === 'events' ? (good as DeviceEvent[]) : [],
    rejected,
  };
}
