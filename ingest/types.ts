// Ingest seams (pinned): what listeners receive, how commands go down to gateways.
import type { Command, CommandResult, DeviceEvent, GatewayStatus, Reading } from '../contract/index.ts';

export interface StoredBatch {
  gateway: { id: string; orgPath: string; county: string };
  /** only records new to the database (never a redelivered duplicate) */
  readings: Reading[];
  events: DeviceEvent[];
}

/**
 * A valid batch of a registered gateway as it arrived, before its storage commit. At least once:
 * a message redelivered (after a crash, a dropped connection, a gateway's resend) arrives again
 * with the same (gateway, seq), so a listener must skip what it already handled (the rule engine
 * keeps the highest seq it evaluated per series, persisted with the alerts).
 */
export interface ArrivedBatch {
  gateway: { id: string; orgPath: string; county: string };
  readings: Reading[];
  events: DeviceEvent[];
}

export interface BatchListener {
  name: string;
  /** after the storage commit, only the records new to the database; not called when `onArrival` is given */
  onStored(batch: StoredBatch): Promise<void>;
  /**
   * On arrival, before the storage commit (rules: alarms never wait behind bulk). The message's
   * receipt and broker acknowledgement wait for the returned promise as well as for the storage
   * commit (ingest/README.md "Rules on arrival").
   */
  onArrival?(batch: ArrivedBatch): Promise<void>;
  onGatewayStatus?(status: GatewayStatus & { orgPath: string }): Promise<void>;
}

export interface CommandSender {
  send(gatewayId: string, command: Command, timeoutMs?: number): Promise<CommandResult>;
}

/** Why an uplink message (or one record of it) went to the dead-letter table. */
export const DEAD_LETTER_REASONS = [
  'topic',            // topic does not parse / wrong channel
  'not_json',         // payload is not JSON
  'schema',           // breaks the contract schema (or an unsupported wire version); a bad record alone when the envelope is valid
  'gateway_mismatch', // gateway id in the payload differs from the topic, or the topic's region is not the gateway's
  'storage',          // the database refused the data itself (not a connection fault)
] as const;
export type DeadLetterReason = (typeof DEAD_LETTER_REASONS)[number];
/**
 * Reasons older versions wrote and rows may still carry. `unknown_gateway`: a gateway not yet
 * registered centrally. Such records are no longer dead-lettered: they stay on the gateway without a
 * receipt until `xiaoan gateway add` registers it (docs/delivery.md); old rows can be replayed.
 */
export const LEGACY_DEAD_LETTER_REASONS = ['unknown_gateway'] as const;

export interface GatewayInfo {
  id: string;
  orgPath: string;
  county: string;
  name: string;
}
