// The Modbus driver: reads a device's points as its profile declares them, in as few requests as
// the protocol allows, over a line it shares with the other devices on the same bus or endpoint.
// poll() never throws for a device fault: it records it in health() and returns what it could read.
import type { DeviceDriver, DeviceSpec, DriverContext, Observation } from '../types.ts';
import { DriverError } from '../types.ts';
import type { ModbusProfile } from '../profile-schema.ts';
import { ALARM_EVENT_TYPES } from '../profile-schema.ts';
import { HealthTracker } from '../health.ts';
import { decodeBlock, encodeRaw, fromEngineering, modiconRef, planReads, resolvePoints, MAX_WRITE_COILS, MAX_WRITE_REGISTERS, type DecodedPoint, type ReadBlock, type ResolvedPoint } from './codec.ts';
import { defaultLines, interFrameGapMs, ModbusLine, type LineRegistry } from './line.ts';
import { parseModbusUrl } from './url.ts';
import { createSerialLibWire, targetKey, type ModbusWire, type WireTarget } from './wire.ts';

export interface ModbusDriverOptions {
  lines?: LineRegistry;
  wireFactory?: (t: WireTarget) => ModbusWire;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
}

export interface ModbusDriver extends DeviceDriver {
  readonly line: ModbusLine;
  readonly unit: number;
  /** the read plan (for `xiaoan device read --plan` and tests) */
  readonly plan: ReadBlock[];
}

export async function createModbusDriver(spec: DeviceSpec, profile: ModbusProfile, ctx: DriverContext, opts: ModbusDriverOptions = {}): Promise<ModbusDriver> {
  const addr = parseModbusUrl(spec.url);
  const points = resolvePoints(profile);
  const plan = planReads(points, profile.modbus.maxGap);
  const timeoutMs = addr.timeoutMs ?? profile.modbus.timeout;
  const retries = profile.modbus.retries;
  const log = ctx.log.child(`modbus:${spec.id}`);
  const lines = opts.lines ?? defaultLines;
  const line = lines.acquire(targetKey(addr.target), () =>
    new ModbusLine((opts.wireFactory ?? createSerialLibWire)(addr.target), {
      clock: ctx.clock,
      log: ctx.log.child(`modbus-line:${targetKey(addr.target)}`),
      gapMs: addr.target.kind === 'rtu' ? interFrameGapMs(addr.target.baudRate) : 0,
      backoffBaseMs: opts.backoffBaseMs,
      backoffMaxMs: opts.backoffMaxMs,
    }),
  );
  const health = new HealthTracker(ctx.clock);
  const bools = new Map<string, boolean>();
  const labels = new Map<string, string>();
  let closed = false;

  const where = (b: { table: ReadBlock['table']; start: number; count: number }) =>
    `register ${modiconRef(b.table, b.start)}${b.count > 1 ? `…${modiconRef(b.table, b.start + b.count - 1)}` : ''} (unit ${addr.unit}, ${line.key})`;

  function readBlock(b: ReadBlock): Promise<Array<number | boolean>> {
    return line.request<Array<number | boolean>>(addr.unit, where(b), timeoutMs, retries, (wire, t) =>
      b.fc === 1 || b.fc === 2 ? wire.readBits(b.fc, addr.unit, b.start, b.count, t) : wire.readRegisters(b.fc, addr.unit, b.start, b.count, t),
      (err) => health.note(err),
    );
  }

  function edge(out: Observation[], ts: number, name: string, now: boolean, p: { event?: string; clearEvent?: string; priority?: 'alarm' | 'normal'; data?: Record<string, unknown> }) {
    const before = bools.get(name);
    bools.set(name, now);
    // first sight counts as a rising edge: an alarm already on when the gateway starts is still an alarm
    if (now && before !== true && p.event) out.push(event(p.event, ts, p.priority, { point: name, ...p.data }));
    if (!now && before === true && p.clearEvent) out.push(event(p.clearEvent, ts, undefined, { point: name, ...p.data }));
  }

  function observe(d: DecodedPoint, ts: number, out: Observation[]) {
    const p = d.point;
    if (p.type === 'bitfield') {
      for (const bit of p.bits ?? []) {
        const v = d.bits!.get(bit.name)!;
        if (bit.reading) out.push({ kind: 'reading', metric: bit.name, value: v ? 1 : 0, ts, quality: 'good' });
        edge(out, ts, bit.name, v, bit);
      }
      return;
    }
    if (p.reading) out.push({ kind: 'reading', metric: p.name, value: d.value, ts, quality: 'good' });
    if (p.type === 'bool') edge(out, ts, p.name, d.bool!, p);
    if (p.type === 'enum') {
      const before = labels.get(p.name);
      labels.set(p.name, d.label!);
      const type = p.events?.[d.label!];
      if (type && before !== d.label) out.push(event(type, ts, p.priority, { point: p.name, state: d.label, ...p.data }));
    }
  }

  const driver: ModbusDriver = {
    spec,
    line,
    unit: addr.unit,
    plan,
    health: () => health.snapshot(),
    async poll() {
      if (closed) return [];
      const out: Observation[] = [];
      let firstProblem: DriverError | null = null;
      let answered = 0;
      try {
        for (const b of plan) {
          try {
            const data = await readBlock(b);
            answered++;
            const ts = ctx.clock.now();
            for (const d of decodeBlock(b, data)) observe(d, ts, out);
          } catch (e) {
            const err = e instanceof DriverError ? e : new DriverError(String((e as Error)?.message ?? e), 'device_error', true);
            firstProblem ??= err;
            if (err.code === 'modbus_exception') {
              // the device answered, with a refusal: it is there, but this block is misconfigured or busy
              answered++;
              log.warn('block read failed', { error: err.message, protocolCode: err.protocolCode });
              continue;
            }
            // silence, refusal or garbage: the rest of this poll would only wait on the same fault
            break;
          }
        }
      } catch (e) {
        firstProblem ??= new DriverError(String((e as Error)?.message ?? e), 'driver_bug', true);
        log.error('poll failed unexpectedly', { error: e });
      }
      if (!firstProblem) health.ok();
      else if (answered > 0) health.partial(firstProblem);
      else {
        const was = health.snapshot().state;
        health.failed(firstProblem);
        if (was !== 'offline' && health.snapshot().state === 'offline') log.warn('device offline', { error: firstProblem.message });
      }
      return out;
    },
    async write(pointName, value) {
      const owner = points.find((x) => x.bits?.some((b) => b.name === pointName) && (x.table === 'coil' || x.table === 'holding'));
      const p = points.find((x) => x.name === pointName) ?? (owner?.table === 'coil' ? owner : undefined);
      if (!p || !p.writable)
        throw new DriverError(
          `点位不可写 point "${pointName}" is not writable on ${profile.id}; writable: ${points.filter((x) => x.writable).map((x) => x.name).join(', ') || 'none'}`,
          'not_writable',
          false,
        );
      const at = `${modiconRef(p.table, p.address)} (unit ${addr.unit}, ${line.key})`;
      if (p.table === 'coil' && p.type === 'bitfield') {
        if (p.name !== pointName) {
          // one named bit of a coil field: FC 5 write single coil
          const bit = p.bits!.find((b) => b.name === pointName)!.bit;
          const b = toBool(value);
          if (b === null) throw new DriverError(`值无效 "${pointName}" takes true/false, got ${JSON.stringify(value)}`, 'bad_value', false);
          await line.request(addr.unit, `coil ${modiconRef('coil', p.address + bit)} (unit ${addr.unit}, ${line.key})`, timeoutMs, 0, (w, t) => w.writeCoil(addr.unit, p.address + bit, b, t));
          return;
        }
        // the whole field: FC 15 write multiple coils, from a bit mask (bit 0 = first coil)
        const mask = typeof value === 'number' ? value : typeof value === 'string' && /^(0x[0-9a-f]+|\d+)$/i.test(value) ? Number(value) : NaN;
        if (!Number.isInteger(mask) || mask < 0 || mask >= 2 ** Math.min(p.width, 52))
          throw new DriverError(`值无效 "${pointName}" takes a bit mask 0…${2 ** Math.min(p.width, 52) - 1}, got ${JSON.stringify(value)}`, 'bad_value', false);
        const states = Array.from({ length: p.width }, (_, i) => Math.floor(mask / 2 ** i) % 2 === 1);
        if (states.length > MAX_WRITE_COILS) throw new DriverError(`"${pointName}" spans more than ${MAX_WRITE_COILS} coils`, 'bad_value', false);
        await line.request(addr.unit, `coils ${at}`, timeoutMs, 0, (w, t) => w.writeCoils(addr.unit, p.address, states, t));
        return;
      }
      if (p.table === 'coil') {
        const b = toBool(value);
        if (b === null) throw new DriverError(`值无效 "${pointName}" takes true/false, got ${JSON.stringify(value)}`, 'bad_value', false);
        // FC 5 write single coil
        await line.request(addr.unit, `coil ${at}`, timeoutMs, 0, (w, t) => w.writeCoil(addr.unit, p.address, b, t));
        return;
      }
      const n = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
      if (!Number.isFinite(n)) throw new DriverError(`值无效 "${pointName}" takes a number, got ${JSON.stringify(value)}`, 'bad_value', false);
      if ((p.min !== undefined && n < p.min) || (p.max !== undefined && n > p.max))
        throw new DriverError(`值超出范围 "${pointName}" = ${n} is outside ${p.min ?? '-∞'}…${p.max ?? '∞'} ${p.unit ?? ''}`.trim(), 'bad_value', false);
      let raw: number;
      try {
        raw = fromEngineering(n, p);
      } catch (e) {
        throw new DriverError(`值无效 "${pointName}": ${(e as Error).message}`, 'bad_value', false);
      }
      const words = encodeRaw(raw, p.rawType, p.byteOrder, p.wordOrder);
      if (words.length > MAX_WRITE_REGISTERS) throw new DriverError('too many registers', 'bad_value', false);
      // FC 6 for one register, FC 16 for a 32-bit value (never split across two FC 6 writes)
      if (words.length === 1) await line.request(addr.unit, `register ${at}`, timeoutMs, 0, (w, t) => w.writeRegister(addr.unit, p.address, words[0]!, t));
      else await line.request(addr.unit, `register ${at}`, timeoutMs, 0, (w, t) => w.writeRegisters(addr.unit, p.address, words, t));
    },
    async close() {
      if (closed) return;
      closed = true;
      await lines.release(line);
    },
  };
  return driver;
}

function event(type: string, ts: number, priority: 'alarm' | 'normal' | undefined, data: Record<string, unknown>): Observation {
  return { kind: 'event', type, ts, priority: priority ?? (ALARM_EVENT_TYPES.has(type) ? 'alarm' : 'normal'), data };
}

function toBool(v: unknown): boolean | null {
  if (v === true || v === 1 || v === '1' || v === 'true' || v === 'on') return true;
  if (v === false || v === 0 || v === '0' || v === 'false' || v === 'off') return false;
  return null;
}

export type { ResolvedPoint };
