// The inbound router: every message of the three lanes comes here. Topic → channel; uplink batches
// are validated (envelope, then each record alone), checked against the gateway's central
// registration, and handed on twice at once: to rule evaluation (on arrival) and to the bulk
// writer of their lane. Custody rules: docs/delivery.md; what is dead-lettered: ingest/README.md.
import { commandResultSchema, gatewayStatusSchema, parsePayload, parseTopic, regionPath, type Logger, type TopicParts } from '../../contract/index.ts';
import type { InboundMessage } from '../mqtt-lane.ts';
import { parseUplinkBatch, type ParsedUplink, type RejectedRecord } from '../uplink.ts';
import type { DeadLetterReason, GatewayInfo } from '../types.ts';
import type { ArrivalEvaluation } from './arrival.ts';
import type { BatchWriter } from './batch-writer.ts';
import type { GatewayCommands } from './commands.ts';
import type { DeadLetterKeeper } from './dead-letters.ts';
import type { GatewayDirectory } from './gateway-directory.ts';
import type { ReceiptPublisher } from './receipts.ts';
import type { RegistrationReminder } from './registration-reminder.ts';
import type { StatusApplier } from './status.ts';
import type { StorageRetry } from './storage-retry.ts';

export interface InboundCounts {
  received: { readings: number; events: number; status: number; commandResults: number };
  awaitingRegistration: number;
}

export interface InboundDeps {
  gateways: GatewayDirectory;
  retry: StorageRetry;
  deadLetters: DeadLetterKeeper;
  reminder: RegistrationReminder;
  commands: GatewayCommands;
  status: StatusApplier;
  arrival: ArrivalEvaluation;
  receipts: ReceiptPublisher;
  writerFor(lane: 'readings' | 'events', gatewayId: string): BatchWriter;
  counts: InboundCounts;
  log: Logger;
}

type Uplink = Extract<ParsedUplink, { ok: true }>;

export class InboundRouter {
  constructor(private readonly d: InboundDeps) {}

  async handle(m: InboundMessage): Promise<void> {
    let parts: TopicParts;
    try {
      parts = parseTopic(m.topic);
    } catch (e) {
      return this.deadLetter(m, 'topic', (e as Error).message, null, null);
    }
    if (parts.channel === 'cmd-result') return this.commandResult(m, parts);
    if (parts.channel === 'cmd' || parts.channel === 'receipt') return m.settle(); // our own downlink echoed by a broad filter
    // An empty retained message only clears a retained status: nothing to store.
    if (parts.channel === 'status' && m.payload.length === 0) return m.settle();
    let gw: GatewayInfo | null;
    try {
      gw = await this.d.retry.run('gateways', () => this.d.gateways.get(parts.gatewayId));
    } catch (e) {
      this.d.log.error('gateway lookup failed; message left unacknowledged', { error: (e as Error).message });
      return;
    }
    // Dead letters of a known gateway belong to its school; otherwise to the topic's county.
    const where = gw && gw.county === parts.county ? gw.orgPath : regionPath(parts.county);
    if (parts.channel === 'status') return this.status(m, parts, gw, where);
    const batch = parseUplinkBatch(parts.channel, m.payload);
    if (!batch.ok) return this.deadLetter(m, batch.reason, batch.detail, parts.gatewayId, where);
    if (!gw) return this.unregistered(m, parts, batch.readings.length + batch.events.length + batch.rejected.length);
    const mismatch = this.mismatch(parts, gw, batch.gateway);
    if (mismatch) return this.deadLetter(m, 'gateway_mismatch', mismatch.detail, mismatch.gatewayId, mismatch.where);
    return this.uplink(m, parts.channel as 'readings' | 'events', gw, batch);
  }

  /** A valid batch of a registered gateway: bad records set aside alone, the rest evaluated and stored. */
  private async uplink(m: InboundMessage, lane: 'readings' | 'events', gw: GatewayInfo, batch: Uplink): Promise<void> {
    if (batch.rejected.length > 0 && !(await this.deadLetterRecords(m, batch.rejected, gw))) return;
    const held = batch.rejected.flatMap((r) => (r.seq === null ? [] : [r.seq]));
    const records = lane === 'readings' ? batch.readings : batch.events;
    this.d.counts.received[lane] += records.length;
    if (records.length === 0) {
      // every record was dead-lettered alone: settled and receipted as it stands
      m.settle();
      void this.d.receipts.send(gw, held);
      return;
    }
    // Rules first: evaluation starts now and commits its alerts on its own, while the records
    // queue for the bulk commit; the receipt waits for both (custody.ts).
    const evaluated = this.d.arrival.evaluate(gw, lane, records);
    this.d.writerFor(lane, gw.id).push({ gateway: gw, records, floor: batch.floor, sentAt: batch.sentAt, msg: m, count: records.length, held, evaluated });
  }

  private unregistered(m: InboundMessage, parts: TopicParts, count: number): void {
    // Unknown is not invalid: no dead letter, no receipt. The gateway keeps the records and sends
    // them again; once registered they are stored and receipted (docs/delivery.md).
    this.d.counts.awaitingRegistration += count;
    this.d.reminder.note(parts.gatewayId, parts.county);
    m.settle();
  }

  private mismatch(parts: TopicParts, gw: GatewayInfo, saidGateway: string): { detail: string; gatewayId: string; where: string } | null {
    if (saidGateway !== parts.gatewayId) {
      return { detail: `payload says gateway "${saidGateway}" but the topic says "${parts.gatewayId}"`, gatewayId: parts.gatewayId, where: gw.orgPath };
    }
    if (parts.county !== gw.county) {
      return { detail: `gateway ${gw.id} is registered in county ${gw.county}, not ${parts.county} of the topic`, gatewayId: gw.id, where: regionPath(parts.county) };
    }
    return null;
  }

  private async status(m: InboundMessage, parts: TopicParts, gw: GatewayInfo | null, where: string): Promise<void> {
    const parsed = parsePayload(gatewayStatusSchema, m.payload);
    if (!parsed.ok) {
      return this.deadLetter(m, parsed.error.startsWith('payload is not JSON') ? 'not_json' : 'schema', `status: ${parsed.error}`, parts.gatewayId, where);
    }
    if (!gw) {
      this.d.reminder.note(parts.gatewayId, parts.county);
      return m.settle();
    }
    const mismatch = this.mismatch(parts, gw, parsed.value.gateway);
    if (mismatch) return this.deadLetter(m, 'gateway_mismatch', mismatch.detail, mismatch.gatewayId, mismatch.where);
    this.d.counts.received.status++;
    await this.d.status.handle(m, parsed.value);
  }

  private commandResult(m: InboundMessage, parts: TopicParts): void {
    this.d.counts.received.commandResults++;
    m.settle();
    const parsed = parsePayload(commandResultSchema, m.payload);
    if (!parsed.ok) {
      void this.deadLetter(m, parsed.error.startsWith('payload is not JSON') ? 'not_json' : 'schema', `cmd-result: ${parsed.error}`, parts.gatewayId, regionPath(parts.county));
      return;
    }
    this.d.commands.answer(parts.gatewayId, parsed.value);
  }

  private async deadLetter(m: InboundMessage, reason: DeadLetterReason, detail: string, gatewayId: string | null, orgPath: string | null): Promise<void> {
    if (await this.d.deadLetters.keep(m.topic, reason, detail, m.payload, gatewayId, orgPath)) m.settle();
  }

  /** Each bad record of a valid envelope alone (payload: that record); true when all are kept. */
  private async deadLetterRecords(m: InboundMessage, rejected: RejectedRecord[], gw: GatewayInfo): Promise<boolean> {
    for (const r of rejected) {
      const ok = await this.d.deadLetters.keep(m.topic, 'schema', r.detail, JSON.stringify(r.record) ?? 'null', gw.id, gw.orgPath, 'record');
      if (!ok) return false;
    }
    return true;
  }
}
