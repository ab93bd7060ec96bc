// Reading an uplink batch: a bad envelope rejects the message, a bad record is set aside alone
// with its seq (when readable) and a detail naming its field; the good records keep their defaults.
import { describe, expect, it } from 'vitest';
import { parseUplinkBatch } from './uplink.ts';

const TS = 1_764_650_000_000;

describe('parseUplinkBatch', () => {
  it('keeps the good events of a batch and sets the bad one aside with its seq and field', () => {
    const r = parseUplinkBatch('events', JSON.stringify({
      v: 1, gateway: 'gw-1', sentAt: TS, floor: 10,
      events: [
        { seq: 10, device: 'smoke-1', type: 'smoke.alarm', ts: TS, priority: 'alarm' },
        { seq: 11, device: 'smoke-1', type: 'Smoke Alarm', ts: TS },
        { seq: 12, device: 'gate-1', type: 'gate.forced_open', ts: TS },
      ],
    }));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.floor).toBe(10);
    expect(r.events.map((e) => e.seq)).toEqual([10, 12]);
    expect(r.events[1]).toMatchObject({ priority: 'normal', drill: false, data: {} });
    expect(r.rejected).toEqual([{ index: 1, seq: 11, record: expect.objectContaining({ type: 'Smoke Alarm' }), detail: expect.stringMatching(/^events\[1\]\.type: /) }]);
  });

  it('a record without a readable seq is set aside without one (it cannot be receipted)', () => {
    const r = parseUplinkBatch('readings', JSON.stringify({ v: 1, gateway: 'gw-1', sentAt: TS, readings: ['x', { seq: -1, device: 'd', metric: 'm', ts: TS, value: 1 }] }));
    expect(r.ok && r.rejected.map((x) => [x.seq, x.detail.split(':')[0]])).toEqual([[null, 'readings[0]'], [null, 'readings[1].seq']]);
  });

  it('rejects the whole message when the envelope is wrong', () => {
    expect(parseUplinkBatch('readings', '{oops')).toMatchObject({ ok: false, reason: 'not_json' });
    expect(parseUplinkBatch('readings', JSON.stringify({ v: 2, gateway: 'gw-1', sentAt: TS, readings: [{}] }))).toMatchObject({ ok: false, reason: 'schema', detail: expect.stringContaining('wire version 2') });
    expect(parseUplinkBatch('readings', JSON.stringify({ v: 1, gateway: 'g/w', sentAt: TS, readings: [{}] }))).toMatchObject({ ok: false, reason: 'schema', detail: expect.stringMatching(/^readings: gateway:/) });
    expect(parseUplinkBatch('events', JSON.stringify({ v: 1, gateway: 'gw', sentAt: TS, events: [] }))).toMatchObject({ ok: false, reason: 'schema' });
  });
});
