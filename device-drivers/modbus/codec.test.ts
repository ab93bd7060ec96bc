import { describe, expect, it } from 'vitest';
import { decodeBlock, decodeRaw, encodeRaw, fromEngineering, modiconRef, planReads, resolvePoints, type ResolvedPoint } from './codec.ts';
import type { ModbusProfile } from '../profile-schema.ts';
import { profileSchema } from '../profile-schema.ts';

// Known wire images: 1.5f is 0x3FC00000; 0x12345678 as int32; -2 as int16 is 0xFFFE.
describe('register decoding with byte and word order', () => {
  it.each([
    ['BE', 'BE', [0x3fc0, 0x0000]], // ABCD
    ['BE', 'LE', [0x0000, 0x3fc0]], // CDAB (word swap)
    ['LE', 'BE', [0xc03f, 0x0000]], // BADC (byte swap)
    ['LE', 'LE', [0x0000, 0xc03f]], // DCBA
  ] as const)('float32 byte %s word %s', (bo, wo, words) => {
    expect(decodeRaw([...words], 'float32', bo, wo)).toBe(1.5);
    expect(encodeRaw(1.5, 'float32', bo, wo)).toEqual(words);
  });
  it('int32, uint32, int16, uint16', () => {
    expect(decodeRaw([0x1234, 0x5678], 'int32', 'BE', 'BE')).toBe(0x12345678);
    expect(decodeRaw([0x5678, 0x1234], 'uint32', 'BE', 'LE')).toBe(0x12345678);
    expect(decodeRaw([0xffff, 0xfffe], 'int32', 'BE', 'BE')).toBe(-2);
    expect(decodeRaw([0xfffe], 'int16', 'BE', 'BE')).toBe(-2);
    expect(decodeRaw([0xfffe], 'uint16', 'BE', 'BE')).toBe(65534);
    expect(decodeRaw([0x3412], 'uint16', 'LE', 'BE')).toBe(0x1234);
    expect(encodeRaw(-2, 'int16', 'BE', 'BE')).toEqual([0xfffe]);
  });
  it('scale and offset both ways, refusing values that do not fit', () => {
    const p = { rawType: 'int16', scale: 0.1, offset: -40 } as ResolvedPoint;
    expect(fromEngineering(21.5, p)).toBe(615);
    expect(() => fromEngineering(4000, p)).toThrow(/does not fit int16/);
  });
  it('Modicon references as on data sheets', () => {
    expect(modiconRef('holding', 9)).toBe('40010');
    expect(modiconRef('input', 0)).toBe('30001');
    expect(modiconRef('coil', 0)).toBe('00001');
    expect(modiconRef('discrete', 4)).toBe('10005');
  });
});

function profileWith(points: unknown[], maxGap = 4): ModbusProfile {
  return profileSchema.parse({
    id: 'test-profile', protocol: 'modbus', category: 'fire', description: { zh: '测试', en: 'test' },
    poll: { interval: '1s', integrity: '1m' }, modbus: { maxGap }, points,
  }) as ModbusProfile;
}

describe('request coalescing', () => {
  it('joins points across small gaps and splits at 125 registers', () => {
    const pts = Array.from({ length: 70 }, (_, i) => ({ name: `r${i}`, table: 'holding', address: i * 2, type: 'float32' }));
    const plan = planReads(resolvePoints(profileWith(pts)), 4);
    expect(plan.map((b) => [b.start, b.count])).toEqual([[0, 124], [124, 16]]);
  });
  it('splits when the gap is larger than maxGap', () => {
    const plan = planReads(resolvePoints(profileWith([
      { name: 'a', table: 'input', address: 0, type: 'uint16' },
      { name: 'b', table: 'input', address: 5, type: 'uint16' },
      { name: 'c', table: 'input', address: 11, type: 'uint16' },
    ])), 4);
    expect(plan.map((b) => [b.start, b.count])).toEqual([[0, 6], [11, 1]]);
  });
  it('splits bit reads at 2000 bits', () => {
    const pts = [
      { name: 'a', table: 'coil', address: 0, type: 'bool' },
      { name: 'b', table: 'coil', address: 1999, type: 'bool' },
      { name: 'c', table: 'coil', address: 2000, type: 'bool' },
    ];
    const plan = planReads(resolvePoints(profileWith(pts)), 4);
    expect(plan.map((b) => [b.start, b.count])).toEqual([[0, 1], [1999, 2]]);
  });
  it('decodes bit fields and enumerations from one block', () => {
    const p = profileWith([
      { name: 'status', table: 'input', address: 0, type: 'bitfield', bits: [{ name: 'low', bit: 0 }, { name: 'fault', bit: 15 }] },
      { name: 'mode', table: 'input', address: 1, type: 'enum', enum: { '0': 'off', '2': 'fault' } },
    ]);
    const [block] = planReads(resolvePoints(p), 4);
    const [status, mode] = decodeBlock(block!, [0x8001, 2]);
    expect([...status!.bits!]).toEqual([['low', true], ['fault', true]]);
    expect(mode!.label).toBe('fault');
    expect(decodeBlock(block!, [0, 7])[1]!.label).toBe('unknown(7)');
  });
});
