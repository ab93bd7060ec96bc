import { describe, expect, it } from 'vitest';
import { silentLogger } from '../contract/index.ts';
import type { DeviceDriver } from '../device-drivers/types.ts';
import type { NewRecord } from './buffer.ts';
import { DeadbandFilter, DeviceRunner } from './scheduler.ts';
import { createManualClock, scriptedProfile } from './testing.ts';

describe('deadband filter', () => {
  it('forwards changes beyond the band, quality changes and an integrity report', () => {
    const f = new DeadbandFilter({ deadband: { smoke_density: 0.01 }, integrityMs: 60_000 });
    const t = 1_750_000_000_000;
    expect(f.pass('smoke_density', 0.02, 'good', t)).toBe(true);
    expect(f.pass('smoke_density', 0.025, 'good', t + 1000)).toBe(false);
    expect(f.pass('smoke_density', 0.03, 'good', t + 2000)).toBe(true); // |0.03 − 0.02| ≥ 0.01
    expect(f.pass('smoke_density', 0.03, 'bad', t + 3000)).toBe(true);
    expect(f.pass('smoke_density', 0.03, 'bad', t + 4000)).toBe(false);
    expect(f.pass('smoke_density', 0.03, 'bad', t + 63_000)).toBe(true);
    // no band: any change passes, no change does not
    expect(f.pass('door_open', 1, 'good', t)).toBe(true);
    expect(f.pass('door_open', 1, 'good', t + 1)).toBe(false);
    expect(f.pass('door_open', 0, 'good', t + 2)).toBe(true);
  });
});

describe('device runner', () => {
  it('spreads the first poll over one interval and jitters each next one within ± jitter', async () => {
    const clock = createManualClock();
    const pollTimes: number[] = [];
    const driver: DeviceDriver = {
      spec: { id: 'd', profile: 'p', url: 'modbus-tcp://h:502' },
      health: () => ({ state: 'online', lastSeen: clock.now(), consecutiveFailures: 0, timeouts: 0, errors: 0, crcErrors: 0, lastError: null }),
      poll: async () => {
        pollTimes.push(clock.now());
        return [];
      },
      write: async () => {},
      close: async () => {},
    };
    const randoms = [0.25, 0, 1, 0.5, 0.75];
    let k = 0;
    const runner = new DeviceRunner({
      spec: driver.spec, profile: scriptedProfile('p', { interval: 10_000 }), clock, log: silentLogger, jitter: 0.1,
      random: () => randoms[k++ % randoms.length]!, createDriver: async () => driver, emit: (_r: NewRecord[]) => {},
    });
    const t0 = clock.now();
    await runner.start();
    await clock.advance(60_000);
    await runner.stop();
    const gaps = pollTimes.map((t, i) => t - (i ? pollTimes[i - 1]! : t0));
    expect(gaps.slice(0, 4)).toEqual([2500, 9000, 11_000, 10_000]);
  });

  it('keeps polling after a driver throws, and retries a driver that failed to open', async () => {
    const clock = createManualClock();
    const emitted: NewRecord[] = [];
    let opens = 0;
    let polls = 0;
    const runner = new DeviceRunner({
      spec: { id: 'd', profile: 'p', url: 'modbus-tcp://h:502' }, profile: scriptedProfile('p', { interval: 1000 }), clock, log: silentLogger,
      jitter: 0, random: () => 0, emit: (r) => emitted.push(...r), retryMs: 5000,
      createDriver: async (spec) => {
        if (opens++ === 0) throw new Error('connect ECONNREFUSED');
        return {
          spec, health: () => ({ state: 'online', lastSeen: clock.now(), consecutiveFailures: 0, timeouts: 0, errors: 0, crcErrors: 0, lastError: null }),
          poll: async () => {
            if (polls++ === 1) throw new Error('driver bug');
            return [{ kind: 'reading', metric: 'temperature', value: polls, ts: clock.now(), quality: 'good' }];
          },
          write: async () => {}, close: async () => {},
        };
      },
    });
    await runner.start();
    expect(emitted.map((e) => (e.kind === 'event' ? e.type : e.metric))).toEqual(['device.offline']);
    await clock.advance(10_000);
    await runner.stop();
    expect(opens).toBe(2);
    expect(runner.stats.pollErrors).toBe(1);
    expect(emitted.filter((e) => e.kind === 'reading').length).toBeGreaterThanOrEqual(3);
    expect(emitted.map((e) => (e.kind === 'event' ? e.type : null)).filter(Boolean)).toEqual(['device.offline', 'device.online']);
  });
});
