// Replaying dead letters (`xiaoan deadletters replay`): each selected row goes through the path the
// worker takes for a live message (topic → registered gateway → parseUplinkBatch → sink), not
// through MQTT, and the row is marked with when and what came of it. Storing is keyed on
// (gateway, seq) like every write, so replaying a row twice stores its records once.
// Listeners (rules, InfluxDB) are not called: a replay fills history, it raises no alerts.
import { parseTopic, type DeviceEvent, type Reading } from '../contract/index.ts';
import type { DeadLetterRow } from './queries.ts';
import type { Store } from './store.ts';
import { parseUplinkBatch, type ParsedUplink } from './uplink.ts';

export type ReplayOutcome = 'stored' | 'duplicate' | 'partial' | 'failed' | 'skipped';

export interface ReplayResult {
  id: number;
  outcome: ReplayOutcome;
  stored: number;
  duplicates: number;
  /** what is still wrong, or what was done */
  message: string;
}

/** Replay one dead-letter row and mark it (replayed_at, replay_result). */
export async function replayDeadLetter(store: Store, row: DeadLetterRow, now: () => number = Date.now): Promise<ReplayResult> {
  const result = await replayRow(store, row);
  await store.db.query('update dead_letters set replayed_at = to_timestamp($2 / 1000.0), replay_result = $3 where id = $1', [
    row.id,
    now(),
    `${result.outcome}: ${result.message}`.slice(0, 2000),
  ]);
  return result;
}

async function replayRow(store: Store, row: DeadLetterRow): Promise<ReplayResult> {
  const fail = (outcome: ReplayOutcome, message: string): ReplayResult => ({ id: row.id, outcome, stored: 0, duplicates: 0, message });
  let parts;
  try {
    parts = parseTopic(row.topic);
  } catch (e) {
    return fail('failed', `topic: ${(e as Error).message}`);
  }
  if (parts.channel !== 'readings' && parts.channel !== 'events') return fail('skipped', `channel ${parts.channel} is not replayed (only readings and events)`);
  const gw = await store.getGateway(parts.gatewayId);
  if (!gw) return fail('failed', `gateway ${parts.gatewayId} is not registered centrally (网关未登记); run \`xiaoan gateway add ${parts.gatewayId} …\` first`);
  if (gw.county !== parts.county) return fail('failed', `gateway ${gw.id} is registered in county ${gw.county}, not ${parts.county} of the topic`);
  const batch: ParsedUplink = parseUplinkBatch(parts.channel, row.unit === 'record' ? wrapRecord(parts.channel, gw.id, row.payload) : row.payload);
  if (!batch.ok) return fail('failed', batch.detail);
  if (batch.gateway !== gw.id) return fail('failed', `payload says gateway "${batch.gateway}" but the topic says "${gw.id}"`);
  const records: Array<Reading | DeviceEvent> = parts.channel === 'readings' ? batch.readings : batch.events;
  if (records.length === 0) return fail('failed', batch.rejected.map((r) => r.detail).join('; '));
  let keys: Set<string>;
  try {
    keys = parts.channel === 'readings'
      ? await store.sink.writeReadings([{ gatewayId: gw.id, replay: true, readings: batch.readings }])
      : await store.sink.writeEvents([{ gatewayId: gw.id, replay: true, events: batch.events }]);
  } catch (e) {
    return fail('failed', `database refused: ${(e as Error).message}`);
  }
  const stored = keys.size;
  const duplicates = records.length - stored;
  const still = batch.rejected.map((r) => r.detail);
  const outcome: ReplayOutcome = still.length ? 'partial' : stored > 0 ? 'stored' : 'duplicate';
  return {
    id: row.id,
    outcome,
    stored,
    duplicates,
    message: `${stored} stored, ${duplicates} already held${still.length ? `; still invalid: ${still.join('; ')}` : ''}`,
  };
}

/** A record set aside alone, as a batch of one (the record keeps its own ts). */
function wrapRecord(kind: 'readings' | 'events', gatewayId: string, payload: string): string {
  let record: unknown;
  try {
    record = JSON.parse(payload);
  } catch {
    return payload; // parseUplinkBatch says what is wrong
  }
  return JSON.stringify({ v: 1, gateway: gatewayId, sentAt: Date.now(), [kind]: [record] });
}
