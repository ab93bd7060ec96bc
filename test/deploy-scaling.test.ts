// docs/scaling.md starts from the same traffic model bench:province simulates, and plans with
// the per-worker figure the benchmark checks: change one and this test says the other must follow.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ASSUMED_WORKER_RPS,
  DEVICES_PER_GATEWAY,
  PROVINCE,
  PROVINCE_EVENTS_S,
  PROVINCE_MESSAGES_S,
  PROVINCE_READINGS_S,
  READINGS_PER_GATEWAY_S,
} from '../bench/province-model.ts';

const ROOT = resolve(import.meta.dirname, '..');
const doc = readFileSync(join(ROOT, 'docs/scaling.md'), 'utf8');
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

describe('docs/scaling.md', () => {
  it('quotes the traffic model of bench/province-model.ts', () => {
    expect(DEVICES_PER_GATEWAY).toBe(50);
    expect(READINGS_PER_GATEWAY_S).toBeCloseTo(2.83, 2);
    for (const figure of [
      fmt(PROVINCE.gateways),
      fmt(PROVINCE.devices),
      fmt(PROVINCE_READINGS_S),
      fmt(PROVINCE_EVENTS_S),
      fmt(PROVINCE_MESSAGES_S),
      READINGS_PER_GATEWAY_S.toFixed(2),
      `${PROVINCE.exceptionIntervalS} s`,
    ]) {
      expect(doc, figure).toContain(figure);
    }
  });

  it('plans with the per-worker figure bench:province checks, and shows the division', () => {
    expect(doc).toContain(`${fmt(ASSUMED_WORKER_RPS)} readings/s`);
    const cores = Math.ceil(PROVINCE_READINGS_S / ASSUMED_WORKER_RPS / 0.5);
    expect(doc).toContain(`= ${cores} worker cores`);
  });

  it('says how to reproduce every measured figure', () => {
    for (const cmd of ['npm run bench:province', 'npm run bench:province -- --quick']) expect(doc).toContain(cmd);
  });
});
