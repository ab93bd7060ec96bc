// /metrics in the Prometheus text exposition format (version 0.0.4).
import type { CommandCounters } from './commands.ts';
import type { GatewayRuntimeStatus } from './gateway.ts';
import type { DeviceRunner } from './scheduler.ts';

const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

export function renderMetrics(m: { gatewayId: string; status: GatewayRuntimeStatus; runners: DeviceRunner[]; commands: CommandCounters }): string {
  const out: string[] = [];
  const g = `gateway="${esc(m.gatewayId)}"`;
  const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[string, number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) out.push(`${name}{${labels ? `${g},${labels}` : g}} ${Number.isFinite(v) ? v : 0}`);
  };
  const b = m.status.buffer;
  metric('xiaoan_edge_buffer_depth', 'gauge', "Records in the on-disk buffer awaiting the centre's receipt.", [['', b.depth]]);
  metric('xiaoan_edge_buffer_alarms', 'gauge', "Alarm events in the buffer awaiting the centre's receipt.", [['', b.alarms]]);
  metric('xiaoan_edge_buffer_oldest_age_seconds', 'gauge', 'Age of the oldest buffered record.', [['', b.oldestAgeMs / 1000]]);
  metric('xiaoan_edge_buffer_dropped_total', 'counter', 'Routine readings dropped because the buffer was full.', [['', b.dropped]]);
  metric('xiaoan_edge_buffer_appended_total', 'counter', 'Records written to the buffer.', [['', b.appended]]);
  metric('xiaoan_edge_buffer_acked_total', 'counter', 'Records removed from the buffer because a receipt named them.', [['', b.acked]]);
  metric('xiaoan_edge_records_quarantined_total', 'counter', 'Records set aside as invalid before they were buffered.', [['', b.quarantined]]);
  metric('xiaoan_edge_buffer_write_errors_total', 'counter', 'Failed buffer writes.', [['', m.status.bufferErrors]]);
  metric('xiaoan_edge_seq', 'gauge', 'Last sequence number assigned.', [['', b.lastSeq]]);
  const u = m.status.uplink;
  metric('xiaoan_edge_uplink_up', 'gauge', '1 when the uplink is connected.', [['', u?.state === 'connected' ? 1 : 0]]);
  metric('xiaoan_edge_uplink_connects_total', 'counter', 'Uplink connections made.', [['', u?.connects ?? 0]]);
  metric('xiaoan_edge_uplink_disconnects_total', 'counter', 'Uplink connections lost.', [['', u?.disconnects ?? 0]]);
  metric('xiaoan_edge_uplink_batches_total', 'counter', 'Batches published.', [['', u?.batchesSent ?? 0]]);
  metric('xiaoan_edge_uplink_inflight_batches', 'gauge', 'Batches awaiting PUBACK (the MQTT window).', [['', u?.inflightBatches ?? 0]]);
  metric('xiaoan_edge_uplink_awaiting_receipt_batches', 'gauge', 'Batches sent and awaiting the centre\'s receipt.', [['', u?.awaitingReceipt ?? 0]]);
  metric('xiaoan_edge_uplink_receipts_total', 'counter', 'Valid receipts received.', [['', u?.receipts ?? 0]]);
  metric('xiaoan_edge_uplink_bad_receipts_total', 'counter', 'Receipts ignored as invalid.', [['', u?.badReceipts ?? 0]]);
  metric('xiaoan_edge_uplink_records_confirmed_total', 'counter', 'Records deleted from the buffer on a receipt.', [['', u?.recordsConfirmed ?? 0]]);
  metric('xiaoan_edge_uplink_resends_total', 'counter', 'Batches sent again for want of a receipt.', [['', u?.resends ?? 0]]);
  metric('xiaoan_edge_uplink_oldest_unconfirmed_seconds', 'gauge', 'Age of the oldest batch sent and still without a receipt.', [['', (u?.oldestUnconfirmedMs ?? 0) / 1000]]);
  metric('xiaoan_edge_uplink_publish_errors_total', 'counter', 'Publishes that failed before PUBACK.', [['', u?.publishErrors ?? 0]]);
  const dev = (r: DeviceRunner) => `device="${esc(r.spec.id)}"`;
  metric('xiaoan_edge_poll_duration_seconds_sum', 'counter', 'Total time spent polling a device.', m.runners.map((r) => [dev(r), r.stats.pollMsSum / 1000]));
  metric('xiaoan_edge_poll_duration_seconds_count', 'counter', 'Polls of a device.', m.runners.map((r) => [dev(r), r.stats.polls]));
  metric('xiaoan_edge_poll_last_duration_seconds', 'gauge', 'Duration of the last poll of a device.', m.runners.map((r) => [dev(r), (r.stats.lastPollMs ?? 0) / 1000]));
  metric('xiaoan_edge_poll_errors_total', 'counter', 'Polls that threw.', m.runners.map((r) => [dev(r), r.stats.pollErrors]));
  metric('xiaoan_edge_readings_suppressed_total', 'counter', 'Readings within the deadband, not forwarded.', m.runners.map((r) => [dev(r), r.stats.suppressed]));
  metric(
    'xiaoan_edge_device_state',
    'gauge',
    '1 for the current health state of a device.',
    m.runners.flatMap((r) => {
      const s = r.health().state;
      return (['online', 'degraded', 'offline'] as const).map((k): [string, number] => [`${dev(r)},state="${k}"`, s === k ? 1 : 0]);
    }),
  );
  const cmd: Array<[string, number]> = [];
  for (const [outcome, counts] of Object.entries(m.commands)) for (const [kind, n] of Object.entries(counts as Record<string, number>)) cmd.push([`kind="${esc(kind)}",outcome="${outcome}"`, n]);
  metric('xiaoan_edge_commands_total', 'counter', 'Downlink commands by kind and outcome.', cmd);
  return out.join('\n') + '\n';
}
