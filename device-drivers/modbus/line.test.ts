// The line's scheduling rules on fake time: one request outstanding, the inter-frame gap, and a
// silent unit backing off alone. The wire here is scripted (a real bus is in test/drivers-pymodbus).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { silentLogger, systemClock } from '../../contract/index.ts';
import { DriverError } from '../types.ts';
import { interFrameGapMs, ModbusLine } from './line.ts';
import type { ModbusWire } from './wire.ts';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

/** A bus where unit 7 never answers and every other unit answers after `replyMs`. */
function scriptedWire(replyMs: number) {
  const calls: Array<{ unit: number; at: number }> = [];
  let outstanding = 0;
  let maxOutstanding = 0;
  const wire: ModbusWire = {
    target: { kind: 'rtu', path: '/dev/ttyFAKE', baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1 },
    isOpen: () => true,
    connect: async () => {},
    async readRegisters(_fc, unit, _start, count, timeoutMs) {
      calls.push({ unit, at: Date.now() });
      outstanding++;
      maxOutstanding = Math.max(maxOutstanding, outstanding);
      try {
        await new Promise((r) => setTimeout(r, unit === 7 ? timeoutMs : replyMs));
        if (unit === 7) throw Object.assign(new Error('Timed out'), { errno: 'ETIMEDOUT' });
        return Array.from({ length: count }, () => unit);
      } finally {
        outstanding--;
      }
    },
    readBits: async () => [],
    writeCoil: async () => {},
    writeCoils: async () => {},
    writeRegister: async () => {},
    writeRegisters: async () => {},
    close: async () => {},
  };
  return { wire, calls, maxOutstanding: () => maxOutstanding };
}

const read = (line: ModbusLine, unit: number) => line.request(unit, `unit ${unit}`, 200, 0, (w, t) => w.readRegisters(3, unit, 0, 2, t));

describe('Modbus line scheduling', () => {
  it('3.5 character times between frames; 1.75 ms above 19,200 baud', () => {
    expect(interFrameGapMs(9600)).toBeCloseTo(4.01, 2);
    expect(interFrameGapMs(19200)).toBeCloseTo(2.005, 3);
    expect(interFrameGapMs(115200)).toBe(1.75);
  });

  it('keeps exactly one request outstanding and waits the gap between frames', async () => {
    const bus = scriptedWire(10);
    const line = new ModbusLine(bus.wire, { clock: systemClock, log: silentLogger, gapMs: interFrameGapMs(9600) });
    const all = Promise.all([read(line, 1), read(line, 2), read(line, 3), read(line, 1)]);
    await vi.advanceTimersByTimeAsync(200);
    expect(await all).toEqual([[1, 1], [2, 2], [3, 3], [1, 1]]);
    expect(bus.maxOutstanding()).toBe(1);
    const starts = bus.calls.map((c) => c.at);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(10 + 5); // reply + ceil(4.01 ms)
  });

  it('a silent unit backs off (2 s, 4 s, 8 s…) while the others keep their turn', async () => {
    const bus = scriptedWire(10);
    const line = new ModbusLine(bus.wire, { clock: systemClock, log: silentLogger, gapMs: 2, backoffBaseMs: 2000, backoffMaxMs: 60_000 });
    const t0 = Date.now();
    const results: string[] = [];
    // poll both units every 500 ms for 20 s, as a scheduler would
    for (let tick = 0; tick < 40; tick++) {
      for (const unit of [1, 7]) read(line, unit).then(() => results.push(`${unit}:ok`), (e: DriverError) => results.push(`${unit}:${e.code}`));
      await vi.advanceTimersByTimeAsync(500);
    }
    expect(results.filter((r) => r === '1:ok')).toHaveLength(40); // never starved
    const wireTimesOf7 = bus.calls.filter((c) => c.unit === 7).map((c) => c.at - t0);
    // on the wire at 0 s, then after 2, 4, 8 s of backoff (each measured from its timeout)
    expect(wireTimesOf7.length).toBe(4);
    const gaps = wireTimesOf7.slice(1).map((t, i) => t - wireTimesOf7[i]!);
    expect(gaps[0]).toBeGreaterThanOrEqual(2000);
    expect(gaps[1]).toBeGreaterThanOrEqual(4000);
    expect(gaps[2]).toBeGreaterThanOrEqual(8000);
    expect(results.filter((r) => r === '7:unit_backoff').length).toBeGreaterThan(30);
    expect(line.unitStats(7)).toMatchObject({ wireRequests: 4, failures: 4 });
  });
});
