// Which Modbus units answer on a port: ask each for one holding register (FC 3). Any answer —
// even an exception — means a unit is there; silence means none is.
import { silentLogger, systemClock, type Logger } from '../../contract/index.ts';
import { DriverError } from '../types.ts';
import { interFrameGapMs, ModbusLine } from './line.ts';
import { parseModbusUrl } from './url.ts';
import { createSerialLibWire } from './wire.ts';

export interface DiscoveredUnit {
  url: string;
  unit: number;
  /** `answered` (a register came back) or `exception N` (the unit exists but refused address 0) */
  answer: string;
}

export async function discoverModbusUnits(url: string, units: number[], opts: { timeoutMs?: number; log?: Logger } = {}): Promise<DiscoveredUnit[]> {
  const addr = parseModbusUrl(url);
  const line = new ModbusLine(createSerialLibWire(addr.target), {
    clock: systemClock,
    log: opts.log ?? silentLogger,
    gapMs: addr.target.kind === 'rtu' ? interFrameGapMs(addr.target.baudRate) : 0,
    backoffBaseMs: 0,
  });
  const base = url.replace(/[?&]unit=\d+/, '').replace(/\?$/, '');
  const sep = base.includes('?') ? '&' : '?';
  const out: DiscoveredUnit[] = [];
  try {
    for (const unit of units) {
      try {
        await line.request(unit, `unit ${unit}`, opts.timeoutMs ?? 300, 0, (w, t) => w.readRegisters(3, unit, 0, 1, t));
        out.push({ url: `${base}${sep}unit=${unit}`, unit, answer: 'answered' });
      } catch (e) {
        const err = e as DriverError;
        if (err.code === 'modbus_exception') out.push({ url: `${base}${sep}unit=${unit}`, unit, answer: `exception ${err.protocolCode}` });
        else if (err.code === 'connection_refused' || err.code === 'no_such_port' || err.code === 'permission_denied' || err.code === 'host_not_found') throw err;
      }
    }
  } finally {
    await line.close();
  }
  return out;
}
