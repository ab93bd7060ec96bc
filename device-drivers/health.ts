// Health is state: every driver keeps one of these and the edge reads it (online / degraded /
// offline, last seen, counters, the last error in one line).
import type { Clock } from '../contract/index.ts';
import type { DeviceHealth } from './types.ts';
import { DriverError } from './types.ts';

/** Consecutive failed polls after which a device is offline (before that it is degraded). */
export const OFFLINE_AFTER_FAILURES = 3;

export class HealthTracker {
  private h: DeviceHealth = { state: 'offline', lastSeen: null, consecutiveFailures: 0, timeouts: 0, errors: 0, crcErrors: 0, lastError: null };

  constructor(private readonly clock: Clock) {}

  snapshot(): DeviceHealth {
    return { ...this.h };
  }

  /** The device answered everything asked of it. */
  ok(): void {
    this.h.lastSeen = this.clock.now();
    this.h.consecutiveFailures = 0;
    this.h.state = 'online';
  }

  /** The device answered, but some of it failed (an exception on one block, a bad value). */
  partial(err: DriverError): void {
    this.count(err);
    this.h.lastSeen = this.clock.now();
    this.h.consecutiveFailures = 0;
    this.h.state = 'degraded';
  }

  /** The device did not answer (timeout, refused, CRC garbage, backing off). */
  failed(err: DriverError): void {
    this.count(err);
    this.h.consecutiveFailures++;
    this.h.state = this.h.consecutiveFailures >= OFFLINE_AFTER_FAILURES || this.h.lastSeen === null ? 'offline' : 'degraded';
  }

  /** A fault that a retry already got past: counted, state unchanged. */
  note(err: DriverError): void {
    this.count(err);
  }

  /** A push device is considered silent (no message within its expected interval). */
  silent(reason: string): void {
    if (this.h.state !== 'offline') this.h.lastError = reason;
    this.h.state = 'offline';
  }

  private count(err: DriverError): void {
    if (err.code === 'timeout') this.h.timeouts++;
    else if (err.code === 'crc') this.h.crcErrors++;
    else if (err.code !== 'unit_backoff') this.h.errors++;
    this.h.lastError = err.message;
  }
}

/** Turn anything thrown by a protocol library into a DriverError (never guess from text when a code exists). */
export function asDriverError(e: unknown, fallbackCode = 'device_error'): DriverError {
  if (e instanceof DriverError) return e;
  const err = e as NodeJS.ErrnoException & { modbusCode?: number };
  const msg = err?.message ?? String(e);
  const code = err?.code ?? err?.errno;
  if (code === 'ECONNREFUSED') return new DriverError(`连接被拒绝 connection refused (${msg})`, 'connection_refused', true);
  if (code === 'ETIMEDOUT') return new DriverError(`超时 timeout (${msg})`, 'timeout', true);
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return new DriverError(`主机不可达 host unreachable (${msg})`, 'unreachable', true);
  if (code === 'ECONNRESET' || code === 'EPIPE') return new DriverError(`连接中断 connection reset (${msg})`, 'connection_reset', true);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new DriverError(`主机名无法解析 host not found (${msg})`, 'host_not_found', code === 'EAI_AGAIN');
  if (code === 'ENOENT') return new DriverError(`设备不存在 no such device (${msg})`, 'no_such_port', false);
  if (code === 'EACCES') return new DriverError(`无权限 permission denied (${msg})`, 'permission_denied', false);
  return new DriverError(msg, fallbackCode, true);
}
