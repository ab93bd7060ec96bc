// Register and bit decoding for Modbus points: int16, uint16, int32, uint32, float32 with byte
// order (inside a 16-bit register) and word order (of the two registers of a 32-bit value),
// scale and offset, bit fields and enumerations; and the request plan that coalesces contiguous
// points into as few reads as the protocol allows.
import type { ModbusPoint, ModbusProfile, ModbusTable, RegisterType } from '../profile-schema.ts';
import { bitFieldWidth, registerCount } from '../profile-schema.ts';

/** Modbus Application Protocol V1.1b3 §6.1–6.4: at most 2000 bits (FC 1/2) and 125 registers (FC 3/4) per read. */
export const MAX_READ_BITS = 2000;
export const MAX_READ_REGISTERS = 125;
/** §6.11 / §6.12: FC 15 writes at most 1968 coils, FC 16 at most 123 registers. */
export const MAX_WRITE_COILS = 1968;
export const MAX_WRITE_REGISTERS = 123;

export type Order = 'BE' | 'LE';

export interface ResolvedPoint extends ModbusPoint {
  byteOrder: Order;
  wordOrder: Order;
  rawType: RegisterType;
  /** registers (1 or 2) or 1 bit */
  width: number;
  /** 10^decimals of scale and offset: engineering values are rounded to it (0 = no rounding, float32) */
  roundTo: number;
}

function decimals(n: number): number {
  if (Number.isInteger(n)) return 0;
  const s = String(n);
  const e = /e-(\d+)$/.exec(s);
  if (e) return Number(e[1]) + (s.split('e')[0]!.split('.')[1]?.length ?? 0);
  return s.split('.')[1]?.length ?? 0;
}

export function resolvePoints(profile: ModbusProfile): ResolvedPoint[] {
  return profile.points.map((p) => {
    const bitTable = p.table === 'coil' || p.table === 'discrete';
    const rawType: RegisterType = p.type === 'bitfield' || p.type === 'enum' ? (p.raw ?? 'uint16') : p.type === 'bool' ? 'uint16' : p.type;
    return {
      ...p,
      byteOrder: p.byteOrder ?? profile.modbus.byteOrder,
      wordOrder: p.wordOrder ?? profile.modbus.wordOrder,
      rawType,
      width: bitTable ? (p.type === 'bitfield' ? bitFieldWidth(p) : 1) : registerCount(p),
      roundTo: rawType === 'float32' ? 0 : 10 ** Math.min(12, Math.max(decimals(p.scale), decimals(p.offset))),
    };
  });
}

/** Engineering value → 1-based Modicon reference as technicians read it on a data sheet (40010). */
export function modiconRef(table: ModbusTable, address: number): string {
  const base = { coil: 1, discrete: 10001, input: 30001, holding: 40001 }[table];
  return String(base + address).padStart(5, '0');
}

function swap16(w: number): number {
  return ((w & 0xff) << 8) | ((w >> 8) & 0xff);
}

/** Registers as sent on the wire → a big-endian buffer in the value's natural order. */
export function wordsToBuffer(words: number[], byteOrder: Order, wordOrder: Order): Buffer {
  const ordered = wordOrder === 'LE' ? [...words].reverse() : words;
  const buf = Buffer.alloc(ordered.length * 2);
  ordered.forEach((w, i) => buf.writeUInt16BE(byteOrder === 'LE' ? swap16(w & 0xffff) : w & 0xffff, i * 2));
  return buf;
}

export function bufferToWords(buf: Buffer, byteOrder: Order, wordOrder: Order): number[] {
  const words: number[] = [];
  for (let i = 0; i < buf.length; i += 2) {
    const w = buf.readUInt16BE(i);
    words.push(byteOrder === 'LE' ? swap16(w) : w);
  }
  return wordOrder === 'LE' ? words.reverse() : words;
}

export function decodeRaw(words: number[], type: RegisterType, byteOrder: Order, wordOrder: Order): number {
  // fast paths without a Buffer: most points are one register
  if (type === 'uint16' || type === 'int16') {
    const w = byteOrder === 'LE' ? swap16(words[0]! & 0xffff) : words[0]! & 0xffff;
    return type === 'int16' && w >= 0x8000 ? w - 0x10000 : w;
  }
  if (type === 'uint32' || type === 'int32') {
    const [a, b2] = wordOrder === 'LE' ? [words[1]!, words[0]!] : [words[0]!, words[1]!];
    const hi = byteOrder === 'LE' ? swap16(a & 0xffff) : a & 0xffff;
    const lo = byteOrder === 'LE' ? swap16(b2 & 0xffff) : b2 & 0xffff;
    const u = hi * 0x10000 + lo;
    return type === 'int32' && u >= 0x80000000 ? u - 0x100000000 : u;
  }
  // float32 (IEEE 754 single), in the value's natural order after byte and word swaps
  return wordsToBuffer(words, byteOrder, wordOrder).readFloatBE(0);
}

export function encodeRaw(value: number, type: RegisterType, byteOrder: Order, wordOrder: Order): number[] {
  const b = Buffer.alloc(type === 'int16' || type === 'uint16' ? 2 : 4);
  switch (type) {
    case 'int16': b.writeInt16BE(value, 0); break;
    case 'uint16': b.writeUInt16BE(value, 0); break;
    case 'int32': b.writeInt32BE(value, 0); break;
    case 'uint32': b.writeUInt32BE(value, 0); break;
    case 'float32': b.writeFloatBE(value, 0); break;
  }
  return bufferToWords(b, byteOrder, wordOrder);
}

/** Twelve significant digits: 0.1 * 215 is 21.5, not 21.500000000000004. */
export function tidy(n: number): number {
  return Number.isFinite(n) ? Number(n.toPrecision(12)) : n;
}

/** raw * scale + offset */
export function toEngineering(raw: number, p: { scale: number; offset: number; rawType?: RegisterType }): number {
  return tidy(raw * p.scale + p.offset);
}

/** Engineering value → raw integer (or float) for a write; throws a plain Error naming the limit broken. */
export function fromEngineering(value: number, p: ResolvedPoint): number {
  const raw = (value - p.offset) / p.scale;
  if (p.rawType === 'float32') return raw;
  const r = Math.round(raw);
  const [lo, hi] = {
    int16: [-32768, 32767], uint16: [0, 65535], int32: [-2147483648, 2147483647], uint32: [0, 4294967295], float32: [-Infinity, Infinity],
  }[p.rawType];
  if (r < lo! || r > hi!) throw new Error(`value ${value} does not fit ${p.rawType} (raw ${r}, range ${lo}…${hi})`);
  return r;
}

export interface ReadBlock {
  table: ModbusTable;
  /** Modbus function code: 1 coils, 2 discrete inputs, 3 holding registers, 4 input registers */
  fc: 1 | 2 | 3 | 4;
  start: number;
  count: number;
  points: ResolvedPoint[];
  /** built on first decode */
  decoders?: Array<(data: Array<number | boolean>) => DecodedPoint>;
}

const FC: Record<ModbusTable, 1 | 2 | 3 | 4> = { coil: 1, discrete: 2, holding: 3, input: 4 };

/**
 * Coalesce points into read requests: per table, in address order, a point joins the current
 * request when the gap to it is at most `maxGap` and the request stays within 125 registers or
 * 2000 bits. Points that are write-only (`reading: false` and no events) are not read.
 */
export function planReads(points: ResolvedPoint[], maxGap: number): ReadBlock[] {
  const blocks: ReadBlock[] = [];
  const tables: ModbusTable[] = ['discrete', 'coil', 'input', 'holding'];
  for (const table of tables) {
    const limit = table === 'coil' || table === 'discrete' ? MAX_READ_BITS : MAX_READ_REGISTERS;
    const gap = table === 'coil' || table === 'discrete' ? maxGap * 16 : maxGap;
    const pts = points.filter((p) => p.table === table && isRead(p)).sort((a, b) => a.address - b.address);
    let cur: ReadBlock | null = null;
    for (const p of pts) {
      const end = p.address + p.width;
      if (cur && p.address - (cur.start + cur.count) <= gap && end - cur.start <= limit) {
        cur.count = Math.max(cur.count, end - cur.start);
        cur.points.push(p);
      } else {
        cur = { table, fc: FC[table], start: p.address, count: p.width, points: [p] };
        blocks.push(cur);
      }
    }
  }
  return blocks;
}

function isRead(p: ResolvedPoint): boolean {
  return p.reading || !!p.event || !!p.clearEvent || p.type === 'bitfield' || p.type === 'enum';
}

/** A value as decoded from one poll: numbers for readings; bools and labels for edges. */
export interface DecodedPoint {
  point: ResolvedPoint;
  /** engineering value (bool → 0/1; enum → raw number) */
  value: number;
  /** bool state (bool points) */
  bool?: boolean;
  /** per bit of a bitfield */
  bits?: Map<string, boolean>;
  /** enum label, or `unknown(N)` */
  label?: string;
}

/** Decode every point of a block from the registers (or bits) that came back. */
export function decodeBlock(block: ReadBlock, data: Array<number | boolean>): DecodedPoint[] {
  const decoders = (block.decoders ??= block.points.map((p) => pointDecoder(p, p.address - block.start, block.table)));
  const out = new Array<DecodedPoint>(decoders.length);
  for (let i = 0; i < decoders.length; i++) out[i] = decoders[i]!(data);
  return out;
}

type PointDecoder = (data: Array<number | boolean>) => DecodedPoint;

/** One decoder per point, built once per plan: the hot path reads only locals. */
function pointDecoder(p: ResolvedPoint, off: number, table: ModbusTable): PointDecoder {
  if ((table === 'coil' || table === 'discrete') && p.type === 'bitfield') {
    const bits = (p.bits ?? []).map((b) => [b.name, off + b.bit] as const);
    const width = p.width;
    return (data) => {
      const m = new Map<string, boolean>();
      for (const [name, at] of bits) m.set(name, Boolean(data[at]));
      let mask = 0;
      for (let i = 0; i < Math.min(width, 52); i++) if (data[off + i]) mask += 2 ** i;
      return { point: p, value: mask, bits: m };
    };
  }
  if (table === 'coil' || table === 'discrete') {
    return (data) => {
      const b = Boolean(data[off]);
      return { point: p, value: b ? 1 : 0, bool: b };
    };
  }
  const { rawType, byteOrder, wordOrder, scale, offset, roundTo, width } = p;
  const raw =
    width === 1
      ? (data: Array<number | boolean>) => decodeRaw([data[off] as number], rawType, byteOrder, wordOrder)
      : (data: Array<number | boolean>) => decodeRaw([data[off] as number, data[off + 1] as number], rawType, byteOrder, wordOrder);
  if (p.type === 'bitfield') {
    const bits = (p.bits ?? []).map((b) => [b.name, 2 ** b.bit] as const);
    return (data) => {
      const r = raw(data);
      const m = new Map<string, boolean>();
      for (const [name, weight] of bits) m.set(name, Math.floor(r / weight) % 2 === 1);
      return { point: p, value: r, bits: m };
    };
  }
  if (p.type === 'enum') {
    const labels = p.enum ?? {};
    return (data) => {
      const r = raw(data);
      return { point: p, value: r, label: labels[String(r)] ?? `unknown(${r})` };
    };
  }
  if (scale === 1 && offset === 0 && roundTo !== 0) return (data) => ({ point: p, value: raw(data) });
  if (roundTo === 0) return (data) => ({ point: p, value: tidy(raw(data) * scale + offset) });
  return (data) => ({ point: p, value: Math.round((raw(data) * scale + offset) * roundTo) / roundTo });
}
