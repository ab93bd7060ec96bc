// A Modbus line: one TCP connection or one RS-485 bus, shared by every device (unit) on it.
// Exactly one request is outstanding at a time; on RTU each request waits the inter-frame gap
// (3.5 character times, a fixed 1.75 ms above 19,200 baud — Modbus over Serial Line V1.02
// §2.5.1.1). A unit that stops answering backs off alone: its queued requests fail fast while
// it waits, so one silent slave costs the bus at most one timeout per backoff period and never
// stalls the other slaves.
import type { Clock, Logger } from '../../contract/index.ts';
import { DriverError } from '../types.ts';
import { classifyModbusError, targetKey, type ModbusWire } from './wire.ts';

export interface LineOptions {
  clock: Clock;
  log: Logger;
  /** silence between frames, ms (RTU); 0 over TCP */
  gapMs: number;
  /** first backoff of a silent unit, doubled per further failure */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** extra silence after a timeout, so a late answer cannot be taken for the next request's */
  settleMs?: number;
}

interface UnitState {
  failures: number;
  until: number;
  wireRequests: number;
  skipped: number;
}

interface Job {
  unit: number;
  what: string;
  timeoutMs: number;
  retriesLeft: number;
  onRetry?: (err: DriverError) => void;
  run: (wire: ModbusWire, timeoutMs: number) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: DriverError) => void;
}

/** Inter-frame gap for a baud rate: 3.5 characters of 11 bits, at least 1.75 ms above 19,200 baud. */
export function interFrameGapMs(baudRate: number): number {
  if (baudRate > 19_200) return 1.75;
  return (3.5 * 11 * 1000) / baudRate;
}

export class ModbusLine {
  readonly key: string;
  private queue: Job[] = [];
  private busy = false;
  private closed = false;
  private units = new Map<number, UnitState>();
  private connectFailures = 0;
  private connectUntil = 0;
  private lastConnectError: DriverError | null = null;
  refs = 0;

  constructor(readonly wire: ModbusWire, private readonly opts: LineOptions) {
    this.key = targetKey(wire.target);
  }

  /** Per-unit counters: requests that went on the wire, and requests refused while backing off. */
  unitStats(unit: number): { wireRequests: number; skipped: number; failures: number; backoffUntil: number } {
    const s = this.unit(unit);
    return { wireRequests: s.wireRequests, skipped: s.skipped, failures: s.failures, backoffUntil: s.until };
  }

  queueLength(): number {
    return this.queue.length;
  }

  /** Queue one request for `unit`. Rejects with DriverError; `unit_backoff` when the unit is waiting out a failure. */
  request<T>(
    unit: number,
    what: string,
    timeoutMs: number,
    retries: number,
    run: (wire: ModbusWire, timeoutMs: number) => Promise<T>,
    onRetry?: (err: DriverError) => void,
  ): Promise<T> {
    if (this.closed) return Promise.reject(new DriverError(`线路已关闭 line closed: ${this.key}`, 'closed', false));
    const refused = this.backoffError(unit, what);
    if (refused) return Promise.reject(refused);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ unit, what, timeoutMs, retriesLeft: retries, run, onRetry, resolve: resolve as (v: unknown) => void, reject });
      void this.pump();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const j of this.queue.splice(0)) j.reject(new DriverError(`线路已关闭 line closed: ${this.key}`, 'closed', false));
    await this.wire.close();
  }

  private unit(unit: number): UnitState {
    let s = this.units.get(unit);
    if (!s) this.units.set(unit, (s = { failures: 0, until: 0, wireRequests: 0, skipped: 0 }));
    return s;
  }

  private backoffError(unit: number, what: string): DriverError | null {
    const now = this.opts.clock.now();
    const s = this.unit(unit);
    if (now < s.until) {
      s.skipped++;
      return new DriverError(`设备无应答，退避中 unit ${unit} on ${this.key} is not answering; next try in ${Math.ceil((s.until - now) / 1000)} s (${what})`, 'unit_backoff', true);
    }
    if (now < this.connectUntil && this.lastConnectError) return this.lastConnectError;
    return null;
  }

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length && !this.closed) {
        const job = this.queue.shift()!;
        const refused = this.backoffError(job.unit, job.what);
        if (refused) {
          job.reject(refused);
          continue;
        }
        let settle = 0;
        try {
          await this.ensureConnected(job.timeoutMs);
          const s = this.unit(job.unit);
          s.wireRequests++;
          const v = await this.guard(job.run(this.wire, job.timeoutMs), job.timeoutMs, { what: job.what });
          s.failures = 0;
          s.until = 0;
          job.resolve(v);
        } catch (e) {
          const err = classifyModbusError(e, job.what);
          if (err.code === 'timeout' || err.code === 'crc') settle = this.opts.settleMs ?? (this.opts.gapMs > 0 ? 20 : 0);
          if (err.code === 'timeout' || err.code === 'crc') {
            const s = this.unit(job.unit);
            if (job.retriesLeft > 0 && s.failures === 0) {
              // retry once more, behind everyone already waiting
              job.retriesLeft--;
              job.onRetry?.(err);
              this.queue.push(job);
            } else {
              if (err.code === 'timeout') this.backOff(job.unit);
              job.reject(err);
            }
          } else {
            if (err.code === 'not_connected' || err.code === 'connection_reset') await this.wire.close().catch(() => {});
            job.reject(err);
          }
        }
        // timers have whole milliseconds: round the gap up, never down
        const wait = Math.ceil(this.opts.gapMs + settle);
        if (wait > 0 && this.queue.length) await this.sleep(wait);
      }
    } finally {
      this.busy = false;
    }
  }

  private backOff(unit: number): void {
    const s = this.unit(unit);
    s.failures++;
    const base = this.opts.backoffBaseMs ?? 2000;
    const max = this.opts.backoffMaxMs ?? 60_000;
    s.until = this.opts.clock.now() + Math.min(max, base * 2 ** (s.failures - 1));
    this.opts.log.warn('unit not answering; backing off', { line: this.key, unit, failures: s.failures, untilMs: s.until });
  }

  private async ensureConnected(timeoutMs: number): Promise<void> {
    if (this.wire.isOpen()) return;
    try {
      // a host that drops SYNs never answers at all: the connect gets its own deadline
      await this.guard(this.wire.connect(timeoutMs), timeoutMs, {
        what: this.key,
        timeoutError: () => new DriverError(`连接超时 connection timed out: ${this.key}`, 'connect_timeout', true),
      });
      if (!this.wire.isOpen()) throw new DriverError(`连接失败 could not connect: ${this.key}`, 'not_connected', true);
      this.connectFailures = 0;
      this.connectUntil = 0;
      this.lastConnectError = null;
    } catch (e) {
      const err = classifyModbusError(e, this.key);
      this.connectFailures++;
      const base = this.opts.backoffBaseMs ?? 2000;
      this.connectUntil = this.opts.clock.now() + Math.min(this.opts.backoffMaxMs ?? 60_000, base * 2 ** (this.connectFailures - 1));
      this.lastConnectError = err;
      throw err;
    }
  }

  /** modbus-serial times out on its own; this guard catches a request that never settles at all. */
  private guard<T>(p: Promise<T>, timeoutMs: number, o: { what: string; timeoutError?: () => DriverError }): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const h = this.opts.clock.setTimeout(
        () => reject(o.timeoutError?.() ?? new DriverError(`超时 timeout: no answer from ${o.what}`, 'timeout', true)),
        timeoutMs + 250,
      );
      p.then(
        (v) => { this.opts.clock.clearTimeout(h); resolve(v); },
        (e) => { this.opts.clock.clearTimeout(h); reject(e); },
      );
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => this.opts.clock.setTimeout(r, ms));
  }
}

/** Lines are shared by every device on the same TCP endpoint or serial port in this process. */
export class LineRegistry {
  private lines = new Map<string, ModbusLine>();

  acquire(key: string, create: () => ModbusLine): ModbusLine {
    let l = this.lines.get(key);
    if (!l) this.lines.set(key, (l = create()));
    l.refs++;
    return l;
  }

  async release(line: ModbusLine): Promise<void> {
    line.refs--;
    if (line.refs <= 0 && this.lines.get(line.key) === line) {
      this.lines.delete(line.key);
      await line.close();
    }
  }
}

export const defaultLines = new LineRegistry();
