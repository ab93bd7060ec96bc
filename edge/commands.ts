// Downlink commands on `…/{gatewayId}/cmd/{kind}`. The central broker lets only ingest service
// accounts publish there (and the gateway subscribes only to its own cmd/#); the gateway adds its
// own checks: schema, topic kind = payload kind, kinds allowed by config, freshness (issuedAt),
// replay (an id is handled once). Every command, accepted or refused, is audited in the
// registry file and answered on `cmd-result`.
import { commandSchema, parsePayload, type Clock, type Command, type CommandResult, type Logger } from '../contract/index.ts';
import type { Registry } from './registry.ts';

export interface CommandTarget {
  upsertDevice(input: unknown, source: string): Promise<{ ok: boolean; message: string }>;
  writeDevice(device: string, point: string, value: number | boolean | string): Promise<void>;
  rebirth(): Promise<void>;
}

export interface CommandHandlerOptions {
  allow: string[];
  maxAgeMs: number;
  registry: Registry;
  target: CommandTarget;
  clock: Clock;
  log: Logger;
  publishResult(r: CommandResult): Promise<void>;
}

export interface CommandCounters {
  accepted: Record<string, number>;
  refused: Record<string, number>;
  failed: Record<string, number>;
}

export function createCommandHandler(o: CommandHandlerOptions) {
  const counters: CommandCounters = { accepted: {}, refused: {}, failed: {} };
  const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);

  async function handle(topic: string, payload: Buffer): Promise<CommandResult | null> {
    const receivedAt = o.clock.now();
    const kindInTopic = topic.split('/cmd/')[1] ?? '';
    const parsed = parsePayload(commandSchema, payload);
    if (!parsed.ok) {
      // Without a valid id there is nobody to answer; audit and log it.
      const id = safeId(payload);
      o.registry.audit({ id: id ?? '(none)', kind: kindInTopic || '(none)', issuedBy: '(unknown)', issuedAt: 0, receivedAt, ok: false, message: `invalid command: ${parsed.error}` });
      bump(counters.refused, kindInTopic || 'invalid');
      o.log.warn('command refused: invalid', { topic, error: parsed.error });
      if (id) return answer({ v: 1, id, ok: false, message: `命令无效 invalid command: ${parsed.error}`.slice(0, 1000), ts: receivedAt });
      return null;
    }
    const cmd = parsed.value;
    const refuse = (message: string) => {
      bump(counters.refused, cmd.kind);
      o.registry.audit({ id: cmd.id, kind: cmd.kind, issuedBy: cmd.issuedBy, issuedAt: cmd.issuedAt, receivedAt, ok: false, message, detail: detailOf(cmd) });
      o.log.warn('command refused', { id: cmd.id, kind: cmd.kind, issuedBy: cmd.issuedBy, reason: message });
      return answer({ v: 1, id: cmd.id, ok: false, message, ts: receivedAt });
    };
    if (kindInTopic !== cmd.kind) return refuse(`命令类型与主题不符 kind "${cmd.kind}" was published on cmd/${kindInTopic}`);
    if (!o.allow.includes(cmd.kind)) return refuse(`本网关不接受此命令 this gateway does not accept ${cmd.kind} (commands.allow)`);
    if (Math.abs(receivedAt - cmd.issuedAt) > o.maxAgeMs) {
      return refuse(`命令已过期 stale command: issued ${Math.round((receivedAt - cmd.issuedAt) / 1000)} s ago, limit ${o.maxAgeMs / 1000} s`);
    }
    if (o.registry.seenCommand(cmd.id)) return refuse(`重复命令 command id ${cmd.id} was already handled`);

    let ok = true;
    let message = 'ok';
    try {
      if (cmd.kind === 'device.upsert') {
        const r = await o.target.upsertDevice(cmd.device, `command:${cmd.issuedBy}`);
        ok = r.ok;
        message = r.message;
      } else if (cmd.kind === 'device.write') {
        await o.target.writeDevice(cmd.device, cmd.point, cmd.value);
        message = `已写入 wrote ${cmd.point} on ${cmd.device}`;
      } else {
        await o.target.rebirth();
        message = '已重发上线消息 birth published';
      }
    } catch (e) {
      ok = false;
      const code = (e as { code?: string }).code;
      message = `${(e as Error).message}${code ? ` (${code}${(e as { retryable?: boolean }).retryable ? ', retryable' : ''})` : ''}`;
    }
    bump(ok ? counters.accepted : counters.failed, cmd.kind);
    o.registry.audit({ id: cmd.id, kind: cmd.kind, issuedBy: cmd.issuedBy, issuedAt: cmd.issuedAt, receivedAt, ok, message, detail: detailOf(cmd) });
    o.log.info('command handled', { id: cmd.id, kind: cmd.kind, issuedBy: cmd.issuedBy, ok });
    return answer({ v: 1, id: cmd.id, ok, message: message.slice(0, 1000), ts: o.clock.now() });
  }

  async function answer(r: CommandResult): Promise<CommandResult> {
    await o.publishResult(r).catch((e) => o.log.warn('command result not delivered', { id: r.id, error: (e as Error).message }));
    return r;
  }

  return { handle, counters };
}

function safeId(payload: Buffer): string | null {
  try {
    const j = JSON.parse(payload.toString('utf8')) as { id?: unknown };
    return typeof j.id === 'string' && j.id.length > 0 && j.id.length <= 64 ? j.id : null;
  } catch {
    return null;
  }
}

/** What the audit keeps of a command: never a device password. */
function detailOf(cmd: Command): unknown {
  if (cmd.kind === 'device.write') return { device: cmd.device, point: cmd.point, value: cmd.value };
  if (cmd.kind === 'device.upsert') {
    const { password: _pw, ...rest } = cmd.device as Record<string, unknown>;
    return { device: rest };
  }
  return undefined;
}
