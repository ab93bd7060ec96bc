// The worker's three MQTT connections ("lanes"), so that nothing urgent waits behind bulk:
//   events   — event batches (alarms); their own connection, their own commits
//   readings — reading batches; many messages are gathered into one COPY
//   control  — gateway status (retained; not shared, so every worker learns it at start), command
//              results, receipts and commands are published here
// With MQTT 5, events and readings are shared subscriptions ($share/{group}/…), so several workers
// split one region. MQTT 3.1.1 brokers (the embedded aedes) get plain subscriptions: `open()` falls
// back to 3.1.1 when the broker refuses 5 and the version was not fixed by configuration.
import { regionFilter, type Logger } from '../../contract/index.ts';
import { Lane, type InboundMessage, type LaneState } from '../mqtt-lane.ts';

export type LaneName = 'events' | 'readings' | 'control';

export interface ConnectionOptions {
  brokerUrl: string;
  username: string;
  password: string;
  region: string;
  shareGroup?: string;
  /** fixed by configuration; undefined = 5 with a fall back to 4 */
  protocolVersion?: 4 | 5;
  idBase: string;
  receiveMaximum: number;
  reconnectPeriodMs?: number;
  tls?: { ca?: Buffer | string; cert?: Buffer | string; key?: Buffer | string; rejectUnauthorized?: boolean };
  onMessage(m: InboundMessage): void;
  saturated(lane: LaneName): boolean;
  log: Logger;
}

export interface LaneReport {
  state: LaneState;
  connects: number;
  held: number;
  lastError: string | null;
}

export class Connections {
  private lanes: Partial<Record<LaneName, Lane>> = {};
  protocolVersion: 4 | 5;
  constructor(private readonly o: ConnectionOptions) {
    this.protocolVersion = o.protocolVersion ?? 5;
  }

  get control(): Lane | undefined {
    return this.lanes.control;
  }

  async open(): Promise<void> {
    try {
      await this.openAll();
    } catch (e) {
      await this.close();
      const code = (e as { code?: number }).code;
      // 1 (3.1.1: unacceptable protocol version) / 132 (5: unsupported protocol version)
      if (!(this.protocolVersion === 5 && this.o.protocolVersion === undefined && (code === 1 || code === 132))) throw e;
      this.protocolVersion = 4;
      if (this.o.shareGroup) this.o.log.warn('broker speaks MQTT 3.1.1 only: no shared subscription; run one worker per region', { shareGroup: this.o.shareGroup });
      await this.openAll();
    }
  }

  resume(): void {
    for (const l of Object.values(this.lanes)) l?.resume();
  }

  async close(): Promise<void> {
    for (const l of Object.values(this.lanes)) await l?.close();
  }

  report(): Record<LaneName, LaneReport> {
    const one = (l?: Lane): LaneReport => ({ state: l?.state ?? 'closed', connects: l?.connects ?? 0, held: l?.heldCount() ?? 0, lastError: l?.lastError ?? null });
    return { events: one(this.lanes.events), readings: one(this.lanes.readings), control: one(this.lanes.control) };
  }

  private shared(filter: string): string {
    return this.protocolVersion === 5 && this.o.shareGroup ? `$share/${this.o.shareGroup}/${filter}` : filter;
  }

  private async openAll(): Promise<void> {
    const r = this.o.region;
    this.lanes.events = await this.openLane('events', () => [this.shared(regionFilter(r, 'events'))]);
    this.lanes.readings = await this.openLane('readings', () => [this.shared(regionFilter(r, 'readings'))]);
    this.lanes.control = await this.openLane('control', () => [regionFilter(r, 'status'), regionFilter(r, 'cmd-result')]);
  }

  private openLane(name: LaneName, subscriptions: () => string[]): Promise<Lane> {
    const o = this.o;
    return Lane.open({
      name,
      url: o.brokerUrl,
      clientId: `${o.idBase}-${name}`,
      username: o.username,
      password: o.password,
      protocolVersion: this.protocolVersion,
      // Sessions persist so that a dropped connection (a keepalive timeout while the worker holds
      // back, a broker restart) resumes with everything in flight redelivered. Client ids are stable
      // per region and replica, so the broker keeps the session an hour and a restarted worker gets
      // what was queued for it meanwhile.
      clean: false,
      sessionExpirySeconds: 3600,
      receiveMaximum: o.receiveMaximum,
      subscriptions,
      onMessage: o.onMessage,
      saturated: () => o.saturated(name),
      log: o.log.child(name),
      reconnectPeriodMs: o.reconnectPeriodMs,
      tls: o.tls,
    });
  }
}
