import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openSqliteBuffer, SEQ_BLOCK, type NewRecord } from './buffer.ts';
import { createManualClock } from './testing.ts';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'xiaoan-buffer-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const reading = (i: number): NewRecord => ({ kind: 'reading', device: 'temp-1', metric: 'temperature', ts: 1_750_000_000_000 + i, value: i, quality: 'good' });
const alarm = (i: number): NewRecord => ({ kind: 'event', device: 'smoke-1', type: 'smoke.alarm', ts: 1_750_000_000_000 + i, priority: 'alarm', data: { i } });
const event = (i: number): NewRecord => ({ kind: 'event', device: 'gate-1', type: 'gate.passage', ts: 1_750_000_000_000 + i, priority: 'normal', data: { i } });

describe('SQLite buffer', () => {
  it('assigns increasing seq in the write and keeps the counter across reopen, even when emptied', () => {
    const file = join(tmp(), 'b.sqlite');
    const clock = createManualClock();
    let b = openSqliteBuffer({ file, maxRecords: 1000, clock });
    expect(b.append([reading(1), reading(2)])).toMatchObject({ firstSeq: 1, lastSeq: 2 });
    expect(b.confirm([[1, 2]])).toBe(2);
    expect(b.stats().depth).toBe(0);
    expect(b.floor()).toBe(3);
    b.close();
    b = openSqliteBuffer({ file, maxRecords: 1000, clock });
    expect(b.append([reading(3)])).toMatchObject({ firstSeq: 3, lastSeq: 3 });
    expect(b.stats()).toMatchObject({ lastSeq: 3, depth: 1, appended: 3, acked: 2 });
    b.close();
  });

  it('after an unclean stop resumes above the fsynced reservation, never reusing a seq', () => {
    const file = join(tmp(), 'b.sqlite');
    const clock = createManualClock();
    for (const synchronous of ['normal', 'full'] as const) {
      const crashed = openSqliteBuffer({ file, maxRecords: 1000, clock, synchronous });
      const last = crashed.append([reading(1), reading(2)]).lastSeq;
      // no close(): as after SIGKILL or a power cut; a new process opens the file
      const next = openSqliteBuffer({ file, maxRecords: 1000, clock, synchronous });
      const first = next.append([reading(3)]).firstSeq;
      // jumps past whatever the crashed process may have sent, by at most one block
      expect(first).toBeGreaterThan(last + 1);
      expect(first - last).toBeLessThanOrEqual(SEQ_BLOCK + 1);
      next.close();
      crashed.close();
    }
  });

  it('hands out alarms on their own lane and routine records oldest first, split by channel', () => {
    const b = openSqliteBuffer({ file: join(tmp(), 'b.sqlite'), maxRecords: 1000, clock: createManualClock() });
    b.append([reading(1), event(2), reading(3), alarm(4), reading(5)]);
    expect(b.takeAlarms(0, 10).map((e) => [e.seq, e.priority, e.data])).toEqual([[4, 'alarm', { i: 4 }]]);
    const batch = b.takeRoutine(0, 3)!;
    expect(batch.readings.map((r) => r.seq)).toEqual([1, 3]);
    expect(batch.events.map((e) => e.seq)).toEqual([2]);
    expect(batch.lastSeq).toBe(3);
    expect(b.takeRoutine(3, 10)!.readings.map((r) => r.seq)).toEqual([5]);
    expect(b.takeRoutine(5, 10)).toBeNull();
    expect(b.floor()).toBe(1);
    // a receipt deletes exactly the seqs it names, any lane; seqs not held are ignored
    expect(b.confirm([[1, 1], [4, 4], [90, 99]])).toBe(2);
    expect(b.stats()).toMatchObject({ depth: 3, alarms: 0, acked: 2 });
    expect(b.floor()).toBe(2);
    expect(b.read([5, 1, 3, 2]).map((r) => r.seq)).toEqual([2, 3, 5]);
    b.close();
  });

  it('keeps a quarantined record apart, without a seq, and counts it across reopen', () => {
    const file = join(tmp(), 'b.sqlite');
    const clock = createManualClock();
    let b = openSqliteBuffer({ file, maxRecords: 1000, clock });
    b.quarantine([{ device: 'temp-1', reason: 'reading: value: expected number', raw: '{"value":"NaN"}' }]);
    b.append([reading(1)]);
    expect(b.stats()).toMatchObject({ depth: 1, lastSeq: 1, quarantined: 1 });
    b.close();
    b = openSqliteBuffer({ file, maxRecords: 1000, clock });
    expect(b.stats().quarantined).toBe(1);
    expect(b.quarantined(10)).toEqual([{ at: clock.now(), device: 'temp-1', reason: 'reading: value: expected number', raw: '{"value":"NaN"}' }]);
    b.close();
  });

  it('past the cap drops the oldest routine readings first, never events or alarms, and counts it', () => {
    const file = join(tmp(), 'b.sqlite');
    const clock = createManualClock();
    let b = openSqliteBuffer({ file, maxRecords: 100, clock });
    b.append([alarm(0), event(1)]);
    for (let i = 2; i < 150; i++) b.append([reading(i)]);
    const s = b.stats();
    expect(s.depth).toBe(100);
    expect(s.dropped).toBe(50);
    const alarms = b.takeAlarms(0, 10);
    expect(alarms).toHaveLength(1);
    const rest = b.takeRoutine(0, 1000)!;
    expect(rest.events.map((e) => e.seq)).toEqual([2]);
    // the survivors are the newest readings: values 52..149
    expect(rest.readings[0]!.value).toBe(52);
    expect(rest.readings.at(-1)!.value).toBe(149);
    b.close();
    b = openSqliteBuffer({ file, maxRecords: 100, clock });
    expect(b.stats().dropped).toBe(50);
    // only events: the cap is exceeded rather than an event lost
    for (let i = 0; i < 120; i++) b.append([event(1000 + i)]);
    expect(b.stats().depth).toBe(122);
    expect(b.takeRoutine(0, 1000)!.readings).toHaveLength(0);
    b.close();
  });

  it('reports the age of the oldest record', async () => {
    const clock = createManualClock();
    const b = openSqliteBuffer({ file: join(tmp(), 'b.sqlite'), maxRecords: 100, clock });
    b.append([reading(1)]);
    await clock.advance(30_000);
    b.append([reading(2)]);
    expect(b.stats().oldestAgeMs).toBe(30_000);
    b.close();
  });
});
