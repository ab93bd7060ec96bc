// Device addresses for Modbus: modbus-tcp://HOST:PORT?unit=N and modbus-rtu:///dev/ttyX?baud=9600&unit=N
import { DriverError } from '../types.ts';
import type { WireTarget } from './wire.ts';

export interface ModbusAddress {
  target: WireTarget;
  unit: number;
  /** per-request timeout override, ms */
  timeoutMs?: number;
}

const bad = (url: string, why: string) =>
  new DriverError(`设备地址无效 invalid device URL "${url}": ${why}`, 'bad_url', false);

export function parseModbusUrl(url: string): ModbusAddress {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw bad(url, 'write modbus-tcp://HOST:PORT?unit=N or modbus-rtu:///dev/ttyX?baud=9600&unit=N');
  }
  const q = u.searchParams;
  const unit = q.has('unit') ? Number(q.get('unit')) : 1;
  // Modbus over Serial Line §2.2: addresses 1–247 (0 is broadcast); TCP gateways also use 0 and 255
  if (!Number.isInteger(unit) || unit < 0 || unit > 255) throw bad(url, 'unit must be 0–255 (1–247 on a serial line)');
  const timeoutMs = q.has('timeout') ? Number(q.get('timeout')) : undefined;
  if (timeoutMs !== undefined && (!Number.isFinite(timeoutMs) || timeoutMs <= 0)) throw bad(url, 'timeout is milliseconds, > 0');
  if (u.protocol === 'modbus-tcp:') {
    if (!u.hostname) throw bad(url, 'host is missing');
    const port = u.port ? Number(u.port) : 502;
    return { target: { kind: 'tcp', host: u.hostname.replace(/^\[|\]$/g, ''), port }, unit, timeoutMs };
  }
  if (u.protocol === 'modbus-rtu:') {
    const path = decodeURIComponent(u.pathname);
    if (!path || path === '/') throw bad(url, 'serial device path is missing (modbus-rtu:///dev/ttyUSB0)');
    if (unit < 1 || unit > 247) throw bad(url, 'unit on a serial line must be 1–247');
    const baudRate = q.has('baud') ? Number(q.get('baud')) : 9600;
    if (![1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200].includes(baudRate)) throw bad(url, `baud ${q.get('baud')} is not a standard rate`);
    const parity = (q.get('parity') ?? 'none') as 'none' | 'even' | 'odd';
    if (!['none', 'even', 'odd'].includes(parity)) throw bad(url, 'parity is none, even or odd');
    const stopBits = Number(q.get('stop') ?? 1) as 1 | 2;
    if (stopBits !== 1 && stopBits !== 2) throw bad(url, 'stop is 1 or 2');
    return { target: { kind: 'rtu', path, baudRate, parity, dataBits: 8, stopBits }, unit, timeoutMs };
  }
  throw bad(url, `scheme ${u.protocol} is not modbus-tcp: or modbus-rtu:`);
}
