// Personal fields of MQTT device payloads (visitor kiosks): checked, masked and hashed here, in
// the driver, so the clear values never reach the buffer, the uplink or a log line.
import { hashResidentId, maskResidentId, residentIdProblem } from '../../contract/index.ts';

export interface PrivacyField {
  field: string;
  kind: 'resident-id' | 'name';
}

export interface PrivacyResult {
  payload: Record<string, unknown>;
  /** a resident ID failed the GB 11643 check: the message must not be passed on as is */
  rejected?: { field: string; reason: string };
}

/** 张三丰 → 张**; Alice Smith → A**** *****. */
export function maskName(name: string): string {
  const chars = [...name.trim()];
  if (chars.length <= 1) return '*';
  return chars[0] + chars.slice(1).map((c) => (c === ' ' ? ' ' : '*')).join('');
}

/**
 * Replace each personal field with its masked form (`{field}Masked`) and, for resident IDs, a keyed
 * hash (`{field}Hash`); the field itself is removed. Returns a new object.
 */
export function protectPayload(payload: Record<string, unknown>, fields: PrivacyField[], hashKey: string): PrivacyResult {
  const out: Record<string, unknown> = { ...payload };
  let rejected: PrivacyResult['rejected'];
  for (const f of fields) {
    if (!(f.field in out)) continue;
    const v = out[f.field];
    delete out[f.field];
    if (typeof v !== 'string') {
      rejected ??= { field: f.field, reason: `${f.field} is not a string` };
      continue;
    }
    if (f.kind === 'name') {
      out[f.field] = maskName(v);
      continue;
    }
    const id = v.trim().toUpperCase();
    const problem = residentIdProblem(id);
    if (problem) {
      rejected ??= { field: f.field, reason: problem };
      continue;
    }
    out[`${f.field}Masked`] = maskResidentId(id);
    out[`${f.field}Hash`] = hashResidentId(id, hashKey);
  }
  return { payload: out, rejected };
}
