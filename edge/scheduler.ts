// Per-device scheduling: each device is its own fault unit. A polled device is read every
// interval (± jitter, first poll spread over one interval so hundreds of devices do not poll in
// lockstep); a push device delivers observations as they come. Readings pass a deadband per
// metric plus a periodic integrity report; events always pass. Health changes become events.
import type { Clock, HealthState, Logger } from '../contract/index.ts';
import type { DeviceDriver, DeviceHealth, DeviceSpec, Observation } from '../device-drivers/types.ts';
import type { NewRecord } from './buffer.ts';
import type { ProfileInfo } from './drivers.ts';

export interface ReportPolicy {
  /** metric → smallest change forwarded; a metric without one is forwarded on any change */
  deadband: Record<string, number>;
  /** ms: each metric is forwarded at least this often */
  integrityMs: number;
}

/** Report by exception: decides which readings are worth sending. */
export class DeadbandFilter {
  private last = new Map<string, { value: number; quality: string; sentAt: number }>();
  constructor(private readonly policy: ReportPolicy) {}

  pass(metric: string, value: number, quality: string, now: number): boolean {
    const prev = this.last.get(metric);
    const band = this.policy.deadband[metric];
    const send =
      !prev ||
      prev.quality !== quality ||
      now - prev.sentAt >= this.policy.integrityMs ||
      (band === undefined || band === 0 ? value !== prev.value : Math.abs(value - prev.value) >= band * (1 - 1e-9)); // 0.03 − 0.02 is 0.00999… in binary
    if (send) this.last.set(metric, { value, quality, sentAt: now });
    return send;
  }
}

export interface DeviceRunnerStats {
  polls: number;
  pollErrors: number;
  overruns: number;
  lastPollMs: number | null;
  pollMsSum: number;
  observations: number;
  forwarded: number;
  suppressed: number;
}

export interface DeviceRunnerOptions {
  spec: DeviceSpec;
  profile: ProfileInfo;
  clock: Clock;
  log: Logger;
  jitter: number;
  random: () => number;
  createDriver(spec: DeviceSpec): Promise<DeviceDriver>;
  /** records to buffer (synchronously, seq assigned there) */
  emit(records: NewRecord[]): void;
  /** ms to wait before retrying a driver that failed to start */
  retryMs?: number;
}

export class DeviceRunner {
  readonly intervalMs: number;
  readonly integrityMs: number;
  private driver: DeviceDriver | null = null;
  private timer: unknown = null;
  private healthTimer: unknown = null;
  private stopped = false;
  private polling = false;
  private filter: DeadbandFilter;
  private healthState: HealthState | null = null;
  private startError: string | null = null;
  private resolveReady!: () => void;
  /** resolves once the device's state is known: first poll done, first push message, or open failed */
  readonly ready: Promise<void> = new Promise((r) => (this.resolveReady = r));
  readonly stats: DeviceRunnerStats = { polls: 0, pollErrors: 0, overruns: 0, lastPollMs: null, pollMsSum: 0, observations: 0, forwarded: 0, suppressed: 0 };

  constructor(private readonly o: DeviceRunnerOptions) {
    this.intervalMs = o.spec.intervalMs ?? o.profile.poll.interval;
    this.integrityMs = Math.max(o.profile.poll.integrity, this.intervalMs);
    this.filter = new DeadbandFilter({ deadband: o.profile.poll.deadband, integrityMs: this.integrityMs });
  }

  get spec(): DeviceSpec {
    return this.o.spec;
  }

  get currentDriver(): DeviceDriver | null {
    return this.driver;
  }

  health(): DeviceHealth {
    if (this.driver) return this.driver.health();
    return { state: 'offline', lastSeen: null, consecutiveFailures: 0, timeouts: 0, errors: this.startError ? 1 : 0, crcErrors: 0, lastError: this.startError };
  }

  async start(): Promise<void> {
    await this.openDriver();
    // Health of push devices (and of devices whose driver failed to open) is checked each interval.
    this.healthTimer = this.o.clock.setInterval(() => {
      if (!this.driver?.poll || this.stats.polls > 0) this.checkHealth();
    }, this.intervalMs);
  }

  private async openDriver(): Promise<void> {
    if (this.stopped) return;
    try {
      const d = await this.o.createDriver(this.o.spec);
      if (this.stopped) {
        await d.close().catch(() => {});
        return;
      }
      this.driver = d;
      this.startError = null;
      if (d.subscribe) await d.subscribe((obs) => this.accept([obs]));
      if (d.poll) this.schedule(this.o.random() * this.intervalMs);
    } catch (e) {
      this.startError = (e as Error).message;
      this.resolveReady();
      this.o.log.warn('driver failed to start; retrying', { device: this.o.spec.id, error: this.startError, retryMs: this.o.retryMs ?? this.intervalMs });
      this.checkHealth();
      this.timer = this.o.clock.setTimeout(() => {
        this.timer = null;
        void this.openDriver();
      }, this.o.retryMs ?? Math.max(this.intervalMs, 1000));
    }
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    this.timer = this.o.clock.setTimeout(() => {
      this.timer = null;
      void this.pollOnce();
    }, Math.max(0, Math.round(delay)));
  }

  private nextDelay(): number {
    const j = this.o.jitter;
    return this.intervalMs * (1 + j * (2 * this.o.random() - 1));
  }

  /** one poll, its own fault unit: a throwing driver is logged, counted and the loop goes on */
  async pollOnce(): Promise<void> {
    const d = this.driver;
    if (!d?.poll || this.stopped) return;
    if (this.polling) {
      this.stats.overruns++;
      this.schedule(this.nextDelay());
      return;
    }
    this.polling = true;
    const t0 = this.o.clock.now();
    let obs: Observation[] = [];
    try {
      obs = await d.poll();
    } catch (e) {
      this.stats.pollErrors++;
      this.o.log.warn('poll failed', { device: this.o.spec.id, error: (e as Error).message, code: (e as { code?: string }).code });
    }
    const ms = this.o.clock.now() - t0;
    this.stats.polls++;
    this.stats.lastPollMs = ms;
    this.stats.pollMsSum += ms;
    this.polling = false;
    this.resolveReady();
    try {
      this.accept(obs);
    } catch (e) {
      this.o.log.error('could not buffer observations', { device: this.o.spec.id, error: (e as Error).message });
    }
    this.checkHealth();
    this.schedule(this.nextDelay());
  }

  private accept(obs: Observation[]): void {
    if (this.stopped || obs.length === 0) return;
    this.resolveReady();
    const now = this.o.clock.now();
    const records: NewRecord[] = [];
    for (const o of obs) {
      this.stats.observations++;
      if (o.kind === 'reading') {
        // a value that is not a number skips the deadband: the gateway quarantines it, never silently
        if (!Number.isFinite(o.value)) records.push({ kind: 'reading', device: this.o.spec.id, metric: o.metric, ts: o.ts, value: o.value, quality: o.quality });
        else if (this.filter.pass(o.metric, o.value, o.quality, now)) {
          records.push({ kind: 'reading', device: this.o.spec.id, metric: o.metric, ts: o.ts, value: o.value, quality: o.quality });
        } else this.stats.suppressed++;
      } else {
        records.push({ kind: 'event', device: this.o.spec.id, type: o.type, ts: o.ts, priority: o.priority, data: o.data });
      }
    }
    if (records.length) {
      this.stats.forwarded += records.length;
      this.o.emit(records);
    }
  }

  checkHealth(): void {
    if (this.stopped) return;
    let h: DeviceHealth;
    try {
      h = this.health();
    } catch (e) {
      this.o.log.warn('health() threw', { device: this.o.spec.id, error: (e as Error).message });
      return;
    }
    if (h.state === this.healthState) return;
    const previous = this.healthState;
    this.healthState = h.state;
    // The first state of a device that starts online is not news; anything else is.
    if (previous === null && h.state === 'online') return;
    this.o.emit([
      {
        kind: 'event',
        device: this.o.spec.id,
        type: `device.${h.state}`,
        ts: this.o.clock.now(),
        priority: 'normal',
        data: { previous: previous ?? 'unknown', lastSeen: h.lastSeen, consecutiveFailures: h.consecutiveFailures, ...(h.lastError ? { lastError: h.lastError.slice(0, 300) } : {}) },
      },
    ]);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.resolveReady();
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    if (this.healthTimer) this.o.clock.clearInterval(this.healthTimer);
    this.timer = this.healthTimer = null;
    const d = this.driver;
    this.driver = null;
    if (d) await d.close().catch((e) => this.o.log.warn('driver close failed', { device: this.o.spec.id, error: (e as Error).message }));
  }
}
