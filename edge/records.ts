// A record is checked where it is made: before it gets a seq and enters the buffer, every reading
// and event is validated against the wire contract (readingSchema / deviceEventSchema without
// seq). One that fails is set aside alone (quarantine) with its reason; the rest of its batch
// goes on. The check is the centre's own schema, so nothing the gateway buffers can be refused
// there for its shape.
import { describeZodError, deviceEventSchema, readingSchema, redact } from '../contract/index.ts';
import type { NewRecord, QuarantineEntry } from './buffer.ts';

const newReadingSchema = readingSchema.omit({ seq: true });
const newEventSchema = deviceEventSchema.omit({ seq: true });

/** raw record JSON kept in quarantine, at most this many characters */
export const MAX_QUARANTINE_RAW = 2000;

export function checkRecords(records: NewRecord[]): { good: NewRecord[]; bad: QuarantineEntry[] } {
  const good: NewRecord[] = [];
  const bad: QuarantineEntry[] = [];
  for (const r of records) {
    const problem = recordProblem(r);
    if (problem === null) good.push(r);
    else bad.push({ device: String((r as { device?: unknown })?.device ?? '').slice(0, 64), reason: problem.slice(0, 500), raw: rawOf(r) });
  }
  return { good, bad };
}

/** why a new record breaks the contract, or null */
export function recordProblem(r: NewRecord): string | null {
  if (!r || typeof r !== 'object') return 'not a record';
  const { kind, ...rest } = r;
  if (kind !== 'reading' && kind !== 'event') return `kind: "${String(kind)}" is neither reading nor event`;
  const ok = (kind === 'reading' ? newReadingSchema : newEventSchema).safeParse(rest);
  if (ok.success) return null;
  return `${kind}: ${describeZodError(ok.error)}`;
}

/** the record as JSON with secrets and ID numbers removed; NaN and Infinity spelled out */
function rawOf(r: NewRecord): string {
  let text: string;
  try {
    text = JSON.stringify(redact(r), (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v));
  } catch (e) {
    text = JSON.stringify({ unserialisable: (e as Error).message });
  }
  return text.length > MAX_QUARANTINE_RAW ? text.slice(0, MAX_QUARANTINE_RAW) + '…' : text;
}
