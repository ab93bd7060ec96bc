// The wire under a Modbus line: one modbus-serial client over TCP or over a serial port (RTU).
// It performs exactly the request it is asked for; queueing, gaps and backoff are the line's job.
import ModbusRTU from 'modbus-serial';
import { DriverError } from '../types.ts';
import { asDriverError } from '../health.ts';

export type WireTarget =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'rtu'; path: string; baudRate: number; parity: 'none' | 'even' | 'odd'; dataBits: 8 | 7; stopBits: 1 | 2 };

/** What a line needs of a wire. Tests may supply their own. */
export interface ModbusWire {
  readonly target: WireTarget;
  isOpen(): boolean;
  connect(timeoutMs: number): Promise<void>;
  readBits(fc: 1 | 2, unit: number, start: number, count: number, timeoutMs: number): Promise<boolean[]>;
  readRegisters(fc: 3 | 4, unit: number, start: number, count: number, timeoutMs: number): Promise<number[]>;
  /** FC 5 */
  writeCoil(unit: number, address: number, value: boolean, timeoutMs: number): Promise<void>;
  /** FC 15 */
  writeCoils(unit: number, address: number, values: boolean[], timeoutMs: number): Promise<void>;
  /** FC 6 */
  writeRegister(unit: number, address: number, value: number, timeoutMs: number): Promise<void>;
  /** FC 16 */
  writeRegisters(unit: number, address: number, values: number[], timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export function targetKey(t: WireTarget): string {
  return t.kind === 'tcp' ? `tcp://${t.host}:${t.port}` : `rtu://${t.path}`;
}

/** Classify what modbus-serial rejected with: exception codes, timeouts, CRC errors, socket errors. */
export function classifyModbusError(e: unknown, where: string): DriverError {
  if (e instanceof DriverError) return e;
  const err = e as Error & { modbusCode?: number; errno?: string; code?: string };
  if (typeof err?.modbusCode === 'number') {
    const c = err.modbusCode;
    // Modbus Application Protocol §7: 5 acknowledge, 6 busy, 10/11 gateway — worth retrying later.
    const retryable = c === 5 || c === 6 || c === 10 || c === 11;
    return new DriverError(`Modbus 异常 exception ${c} (${EXCEPTION_NAMES[c] ?? 'unknown'}) at ${where}`, 'modbus_exception', retryable, c);
  }
  const msg = err?.message ?? String(e);
  if (err?.errno === 'ETIMEDOUT' || /^Timed out/.test(msg)) return new DriverError(`超时 timeout: no answer from ${where}`, 'timeout', true);
  if (msg === 'TCP Connection Timed Out') return new DriverError(`连接超时 connection timed out: ${where}`, 'connect_timeout', true);
  if (/No such file or directory|ENOENT/.test(msg)) return new DriverError(`串口不存在 no such serial device: ${where} (${msg.replace(/^Error: /, '')})`, 'no_such_port', false);
  if (/Permission denied|EACCES/.test(msg)) return new DriverError(`无权访问串口 permission denied: ${where}; add the user to the dialout group`, 'permission_denied', false);
  if (msg === 'CRC error') return new DriverError(`CRC 校验错误 CRC error in the answer from ${where}`, 'crc', true);
  if (/^Data length error|^Unexpected data error/.test(msg)) return new DriverError(`报文错误 malformed frame from ${where}: ${msg}`, 'crc', true);
  if (err?.errno === 'ECONNREFUSED' || err?.code === 'ECONNREFUSED') return new DriverError(`连接被拒绝 connection refused: ${where}`, 'connection_refused', true);
  if (err?.errno === 'PORT_NOT_OPEN' || msg === 'Port Not Open') return new DriverError(`连接已断开 not connected: ${where}`, 'not_connected', true);
  return asDriverError(e);
}

/** Modbus Application Protocol V1.1b3 §7, exception codes. */
export const EXCEPTION_NAMES: Record<number, string> = {
  1: 'illegal function',
  2: 'illegal data address',
  3: 'illegal data value',
  4: 'server device failure',
  5: 'acknowledge',
  6: 'server device busy',
  8: 'memory parity error',
  10: 'gateway path unavailable',
  11: 'gateway target device failed to respond',
};

export function createSerialLibWire(target: WireTarget): ModbusWire {
  let client: ModbusRTU | null = null;
  const use = (unit: number, timeoutMs: number): ModbusRTU => {
    if (!client || !client.isOpen) throw new DriverError(`连接已断开 not connected: ${targetKey(target)}`, 'not_connected', true);
    client.setID(unit);
    client.setTimeout(timeoutMs);
    return client;
  };
  return {
    target,
    isOpen: () => !!client?.isOpen,
    async connect(timeoutMs) {
      if (client) await closeClient(client);
      const c = new ModbusRTU();
      // serial and socket errors arrive as events; the failing request reports them
      c.on('error', () => {});
      c.setTimeout(timeoutMs);
      try {
        if (target.kind === 'tcp') await c.connectTCP(target.host, { port: target.port, timeout: timeoutMs } as never);
        else
          await c.connectRTUBuffered(target.path, {
            baudRate: target.baudRate,
            parity: target.parity,
            dataBits: target.dataBits,
            stopBits: target.stopBits,
          } as never);
      } catch (e) {
        await closeClient(c);
        throw classifyModbusError(e, targetKey(target));
      }
      client = c;
    },
    async readBits(fc, unit, start, count, timeoutMs) {
      const c = use(unit, timeoutMs);
      const r = fc === 1 ? await c.readCoils(start, count) : await c.readDiscreteInputs(start, count);
      return r.data.slice(0, count);
    },
    async readRegisters(fc, unit, start, count, timeoutMs) {
      const c = use(unit, timeoutMs);
      const r = fc === 3 ? await c.readHoldingRegisters(start, count) : await c.readInputRegisters(start, count);
      return r.data;
    },
    async writeCoil(unit, address, value, timeoutMs) {
      await use(unit, timeoutMs).writeCoil(address, value);
    },
    async writeCoils(unit, address, values, timeoutMs) {
      await use(unit, timeoutMs).writeCoils(address, values);
    },
    async writeRegister(unit, address, value, timeoutMs) {
      await use(unit, timeoutMs).writeRegister(address, value);
    },
    async writeRegisters(unit, address, values, timeoutMs) {
      await use(unit, timeoutMs).writeRegisters(address, values);
    },
    async close() {
      if (client) await closeClient(client);
      client = null;
    },
  };
}

function closeClient(c: ModbusRTU): Promise<void> {
  return new Promise((resolve) => {
    try {
      c.close(() => resolve());
    } catch {
      resolve();
    }
    // a port that never reports closing must not hang shutdown
    setTimeout(resolve, 500);
  });
}
