// A Modbus slave driven by a profile, for the demo and for tests: modbus-serial's ServerTCP (or
// ServerSerial for RTU over a serial port) answering from a register image that `set()` changes
// in engineering units. Fault injection: exception replies, delays, silence.
import { ServerSerial, ServerTCP } from 'modbus-serial';
import type { ModbusProfile, ModbusTable } from '../profile-schema.ts';
import { decodeRaw, encodeRaw, fromEngineering, resolvePoints, type ResolvedPoint } from './codec.ts';
import { freePort } from '../util/net.ts';

export type ModbusFault =
  | { kind: 'exception'; code?: number; table?: ModbusTable; address?: number }
  | { kind: 'delay'; ms: number }
  | { kind: 'silence' }
  | { kind: 'none' };

export interface ModbusSimulator {
  port: number;
  url: string;
  unitId: number;
  /** set a point (or bit of a bitfield) in engineering units: numbers, booleans, enum labels */
  set(name: string, value: number | boolean | string): void;
  /** the current engineering value of a point or bit (after the client's writes, too) */
  get(name: string): number | boolean;
  fault(kind: ModbusFault['kind'], opts?: Omit<Extract<ModbusFault, { kind: typeof kind }>, 'kind'>): void;
  /** requests answered (or refused) so far, by function code */
  requests: Record<number, number>;
  close(): Promise<void>;
}

export interface ModbusSimulatorOptions {
  profile: ModbusProfile;
  host?: string;
  port?: number;
  unitId?: number;
  initial?: Record<string, number | boolean | string>;
  /** RTU instead of TCP: serve on this serial device (e.g. one end of a socat pty pair) */
  serialPath?: string;
  baudRate?: number;
}

/** Register image of one simulated device. Addresses up to 16 past the highest defined read as 0. */
export class RegisterImage {
  readonly regs: Record<'holding' | 'input', Map<number, number>> = { holding: new Map(), input: new Map() };
  readonly bits: Record<'coil' | 'discrete', Map<number, boolean>> = { coil: new Map(), discrete: new Map() };
  readonly limit: Record<ModbusTable, number> = { coil: -1, discrete: -1, holding: -1, input: -1 };
  readonly points: ResolvedPoint[];

  constructor(profile: ModbusProfile) {
    this.points = resolvePoints(profile);
    for (const p of this.points) this.limit[p.table] = Math.max(this.limit[p.table], p.address + p.width - 1 + 16);
  }

  inRange(table: ModbusTable, address: number, count: number): boolean {
    return address >= 0 && address + count - 1 <= this.limit[table];
  }

  private find(name: string): { point: ResolvedPoint; bit?: number } {
    for (const p of this.points) {
      if (p.name === name) return { point: p };
      const b = p.bits?.find((x) => x.name === name);
      if (b) return { point: p, bit: b.bit };
    }
    throw new Error(`simulator: the profile has no point or bit "${name}"`);
  }

  private words(p: ResolvedPoint): number[] {
    const t = this.regs[p.table as 'holding' | 'input'];
    return Array.from({ length: p.width }, (_, i) => t.get(p.address + i) ?? 0);
  }

  private setWords(p: ResolvedPoint, words: number[]): void {
    const t = this.regs[p.table as 'holding' | 'input'];
    words.forEach((w, i) => t.set(p.address + i, w & 0xffff));
  }

  set(name: string, value: number | boolean | string): void {
    const { point: p, bit } = this.find(name);
    if ((p.table === 'coil' || p.table === 'discrete') && p.type === 'bitfield') {
      if (bit !== undefined) this.bits[p.table].set(p.address + bit, value === true || value === 1 || value === 'true');
      else for (let i = 0; i < p.width; i++) this.bits[p.table].set(p.address + i, Math.floor(Number(value) / 2 ** i) % 2 === 1);
      return;
    }
    if (p.table === 'coil' || p.table === 'discrete') {
      this.bits[p.table].set(p.address, value === true || value === 1 || value === 'true');
      return;
    }
    if (bit !== undefined) {
      let raw = decodeRaw(this.words(p), p.rawType, p.byteOrder, p.wordOrder);
      const on = value === true || value === 1 || value === 'true';
      const has = Math.floor(raw / 2 ** bit) % 2 === 1;
      if (on && !has) raw += 2 ** bit;
      if (!on && has) raw -= 2 ** bit;
      this.setWords(p, encodeRaw(raw, p.rawType, p.byteOrder, p.wordOrder));
      return;
    }
    let raw: number;
    if (p.type === 'enum') {
      const entry = Object.entries(p.enum ?? {}).find(([, label]) => label === value);
      raw = entry ? Number(entry[0]) : Number(value);
    } else if (p.type === 'bitfield') raw = Number(value);
    else raw = fromEngineering(Number(value), p);
    this.setWords(p, encodeRaw(raw, p.rawType, p.byteOrder, p.wordOrder));
  }

  get(name: string): number | boolean {
    const { point: p, bit } = this.find(name);
    if ((p.table === 'coil' || p.table === 'discrete') && p.type === 'bitfield') {
      if (bit !== undefined) return this.bits[p.table].get(p.address + bit) ?? false;
      let mask = 0;
      for (let i = 0; i < p.width; i++) if (this.bits[p.table].get(p.address + i)) mask += 2 ** i;
      return mask;
    }
    if (p.table === 'coil' || p.table === 'discrete') return this.bits[p.table].get(p.address) ?? false;
    const raw = decodeRaw(this.words(p), p.rawType, p.byteOrder, p.wordOrder);
    if (bit !== undefined) return Math.floor(raw / 2 ** bit) % 2 === 1;
    if (p.type === 'enum' || p.type === 'bitfield') return raw;
    return Number((raw * p.scale + p.offset).toPrecision(12));
  }
}

type Cb<T> = (err: unknown, v?: T) => void;

export async function startModbusSimulator(opts: ModbusSimulatorOptions): Promise<ModbusSimulator> {
  const image = new RegisterImage(opts.profile);
  for (const [k, v] of Object.entries(opts.initial ?? {})) image.set(k, v);
  let fault: ModbusFault = { kind: 'none' };
  const requests: Record<number, number> = {};
  const unitId = opts.unitId ?? 1;
  const timers = new Set<NodeJS.Timeout>();

  /** Answer one request through the active fault; `produce` throws {modbusErrorCode} to refuse. */
  function answer<T>(fc: number, table: ModbusTable, address: number, count: number, produce: () => T, cb: Cb<T>): void {
    void fc;
    const f = fault;
    if (f.kind === 'silence') return;
    const run = () => {
      try {
        if (f.kind === 'exception' && (f.table === undefined || f.table === table) && (f.address === undefined || (f.address >= address && f.address < address + count)))
          throw { modbusErrorCode: f.code ?? 4 };
        // §7 exception 2: the address range is not served by this device
        if (!image.inRange(table, address, count)) throw { modbusErrorCode: 2 };
        cb(null, produce());
      } catch (e) {
        cb(e);
      }
    };
    if (f.kind === 'delay') {
      const h = setTimeout(() => { timers.delete(h); run(); }, f.ms);
      timers.add(h);
    } else run();
  }

  const vector = {
    getCoil: (addr: number, _u: number, cb: Cb<boolean>) => answer(1, 'coil', addr, 1, () => image.bits.coil.get(addr) ?? false, cb),
    getDiscreteInput: (addr: number, _u: number, cb: Cb<boolean>) => answer(2, 'discrete', addr, 1, () => image.bits.discrete.get(addr) ?? false, cb),
    getHoldingRegister: (addr: number, _u: number, cb: Cb<number>) => answer(3, 'holding', addr, 1, () => image.regs.holding.get(addr) ?? 0, cb),
    getInputRegister: (addr: number, _u: number, cb: Cb<number>) => answer(4, 'input', addr, 1, () => image.regs.input.get(addr) ?? 0, cb),
    getMultipleHoldingRegisters: (addr: number, len: number, _u: number, cb: Cb<number[]>) =>
      answer(3, 'holding', addr, len, () => Array.from({ length: len }, (_, i) => image.regs.holding.get(addr + i) ?? 0), cb),
    getMultipleInputRegisters: (addr: number, len: number, _u: number, cb: Cb<number[]>) =>
      answer(4, 'input', addr, len, () => Array.from({ length: len }, (_, i) => image.regs.input.get(addr + i) ?? 0), cb),
    setCoil: (addr: number, value: boolean, _u: number, cb: Cb<void>) => answer(5, 'coil', addr, 1, () => void image.bits.coil.set(addr, value), cb),
    setRegister: (addr: number, value: number, _u: number, cb: Cb<void>) => answer(6, 'holding', addr, 1, () => void image.regs.holding.set(addr, value), cb),
  };

  const host = opts.host ?? '127.0.0.1';
  if (opts.serialPath) {
    const server = await new Promise<ServerSerial>((resolve, reject) => {
      const s: ServerSerial = new ServerSerial(vector as never, {
        path: opts.serialPath!,
        baudRate: opts.baudRate ?? 9600,
        unitID: unitId,
        openCallback: (err: Error | null) => (err ? reject(err) : resolve(s)),
      } as never);
      s.on('error', () => {});
    });
    return handle(0, `modbus-rtu://${opts.serialPath}?baud=${opts.baudRate ?? 9600}&unit=${unitId}`, () =>
      new Promise<void>((r) => server.close(() => r())),
    );
  }

  let port = opts.port ?? 0;
  let server: ServerTCP | null = null;
  for (let attempt = 0; attempt < 5 && !server; attempt++) {
    const p = port || (await freePort(host));
    server = await new Promise((resolve, reject) => {
      const s = new ServerTCP(vector as never, { host, port: p, unitID: unitId });
      s.on('error', () => {}); // a failed answer is already reported to the client as an exception
      s.on('socketError', () => {});
      s.once('initialized', () => resolve(s));
      s.once('serverError', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' && !opts.port ? resolve(null as never) : reject(e)));
    });
    if (server) port = p;
  }
  if (!server) throw new Error('Modbus simulator: no free port found');
  const tcp = server;
  // count requests per function code from the MBAP frames (the vector is called once per bit)
  (tcp as unknown as { _server: import('node:net').Server })._server.on('connection', (sock) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 8 && buf.length >= 6 + buf.readUInt16BE(4)) {
        const fc = buf[7]!;
        requests[fc] = (requests[fc] ?? 0) + 1;
        buf = buf.subarray(6 + buf.readUInt16BE(4));
      }
    });
  });
  return handle(port, `modbus-tcp://${host}:${port}?unit=${unitId}`, () =>
    new Promise<void>((r) => {
      for (const sock of tcp.socks.keys()) sock.destroy();
      tcp.close(() => r());
    }),
  );

  function handle(p: number, url: string, close: () => Promise<void>): ModbusSimulator {
    return {
      port: p,
      url,
      unitId,
      requests,
      set: (n, v) => image.set(n, v),
      get: (n) => image.get(n),
      fault(kind, o) {
        fault = { kind, ...(o ?? {}) } as ModbusFault;
      },
      async close() {
        for (const h of timers) clearTimeout(h);
        await close();
      },
    };
  }
}
