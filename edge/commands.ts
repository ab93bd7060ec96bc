// Downlink commands on `…/{gatewayId}/cmd/{kind}`. The central broker lets only ingest service
// accounts publish there (and the gateway subscribes only to its own cmd/#); the gateway adds its
// own checks: schema, topic kind = payload kind, kinds allowed by config, freshness (issuedAt),
// replay (an id is handled once). Every command, accepted or refused, is audited in the
// registry file and answered on `cmd-result`.
import { commandSchema, MAX_COMMAND_DATA, parsePayload, type Clock, type Command, type CommandResult, type Logger } from '../contract/index.ts';
import type { Registry } from './registry.ts';

export interface CommandTarget {
  upsertDevice(input: unknown, source: string): Promise<{ ok: boolean; message: string }>;
  writeDevice(device: string, point: string, value: number | boolean | string): Promise<void>;
  rebirth(): Promise<void>;
  /** false when no such device is enrolled */
  removeDevice(id: string): Promise<boolean>;
  /** live test of an enrolled device (id) or an unsaved spec; throws EnrolmentError for a bad spec */
  testDevice(input: string | Record<string, unknown>): Promise<{ ok: boolean; message: string; data: Record<string, unknown> }>;
  discover(q: DiscoverQuery): Promise<{ message: string; data: Record<string, unknown> }>;
}

export type DiscoverQuery = Extract<Command, { kind: 'device.discover' }>;

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
    let data: Record<string, unknown> | undefined;
    try {
      if (cmd.kind === 'device.upsert') {
        const r = await o.target.upsertDevice(cmd.device, `command:${cmd.issuedBy}`);
        ok = r.ok;
        message = r.message;
      } else if (cmd.kind === 'device.write') {
        await o.target.writeDevice(cmd.device, cmd.point, cmd.value);
        message = `已写入 wrote ${cmd.point} on ${cmd.device}`;
      } else if (cmd.kind === 'device.remove') {
        ok = await o.target.removeDevice(cmd.device);
        message = ok ? `已删除 removed ${cmd.device}` : `未登记的设备 device "${cmd.device}" is not enrolled on this gateway`;
      } else if (cmd.kind === 'device.test') {
        const r = await o.target.testDevice(cmd.device ?? cmd.spec!);
        ok = r.ok;
        message = r.message;
        data = r.data;
      } else if (cmd.kind === 'device.discover') {
        const r = await o.target.discover(cmd);
        message = r.message;
        data = r.data;
      } else {
        await o.target.rebirth();
        message = '已重发上线消息 birth published';
      }
    } catch (e) {
      ok = false;
      const code = (e as { code?: string }).code;
      message = `${(e as Error).message}${code ? ` (${code}${(e as { retryable?: boolean }).retryable ? ', retryable' : ''})` : ''}`;
    }
    // nothing the centre sees carries a device password, however a driver worded its error
    const secrets = secretsOf(cmd);
    message = scrubSecrets(message, secrets);
    if (data) data = fitData(scrubSecrets(data, secrets));
    bump(ok ? counters.accepted : counters.failed, cmd.kind);
    o.registry.audit({ id: cmd.id, kind: cmd.kind, issuedBy: cmd.issuedBy, issuedAt: cmd.issuedAt, receivedAt, ok, message, detail: detailOf(cmd) });
    o.log.info('command handled', { id: cmd.id, kind: cmd.kind, issuedBy: cmd.issuedBy, ok });
    return answer({ v: 1, id: cmd.id, ok, message: message.slice(0, 1000), ...(data ? { data } : {}), ts: o.clock.now() });
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

/** What the audit keeps of a command: never a device password (field or in the url). */
function detailOf(cmd: Command): unknown {
  if (cmd.kind === 'device.write') return { device: cmd.device, point: cmd.point, value: cmd.value };
  if (cmd.kind === 'device.upsert') return { device: publicSpec(cmd.device) };
  if (cmd.kind === 'device.remove') return { device: cmd.device };
  if (cmd.kind === 'device.test') return cmd.device !== undefined ? { device: cmd.device } : { spec: publicSpec(cmd.spec!) };
  if (cmd.kind === 'device.discover') {
    return { protocol: cmd.protocol, ...(cmd.target ? { target: stripUrlPassword(cmd.target) } : {}), ...(cmd.units ? { units: cmd.units.length } : {}) };
  }
  return undefined;
}

/** A device spec without its password, and with any `user:password@` in its url reduced to `user:***@`. */
export function publicSpec(spec: Record<string, unknown>): Record<string, unknown> {
  const { password: _pw, ...rest } = spec;
  if (typeof rest.url === 'string') rest.url = stripUrlPassword(rest.url);
  return rest;
}

/** `scheme://user:secret@host` → `scheme://user:***@host` (anywhere in a text). */
export function stripUrlPassword(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*):[^\s@/]*@/gi, '$1:***@');
}

/** The secrets a command carries: a spec's password and the password in its url. */
function secretsOf(cmd: Command): string[] {
  const spec = cmd.kind === 'device.test' ? cmd.spec : cmd.kind === 'device.upsert' ? cmd.device : undefined;
  if (!spec) return [];
  const out: string[] = [];
  if (typeof spec.password === 'string' && spec.password) out.push(spec.password);
  if (typeof spec.url === 'string') {
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:([^\s@/]+)@/i.exec(spec.url);
    if (m) {
      out.push(m[1]!);
      try {
        out.push(decodeURIComponent(m[1]!));
      } catch {
        /* not percent-encoded */
      }
    }
  }
  // a one- or two-character "password" would blank out ordinary text; such a spec is refused anyway
  return [...new Set(out)].filter((x) => x.length >= 3);
}

/** Every string in a value with url passwords masked and the given secrets replaced by ***. */
export function scrubSecrets<T>(value: T, secrets: string[]): T {
  const scrub = (v: unknown): unknown => {
    if (typeof v === 'string') {
      let s = stripUrlPassword(v);
      for (const x of secrets) s = s.split(x).join('***');
      return s;
    }
    if (Array.isArray(v)) return v.map(scrub);
    if (v && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) if (k !== 'password') out[k] = scrub(x);
      return out;
    }
    return v;
  };
  return scrub(value) as T;
}

/** Keeps a result's data under the contract's size limit: long lists are cut and marked truncated. */
function fitData(data: Record<string, unknown>): Record<string, unknown> {
  if (JSON.stringify(data).length <= MAX_COMMAND_DATA) return data;
  const out: Record<string, unknown> = { ...data, truncated: true };
  for (let keep = 64; keep >= 0; keep = keep === 0 ? -1 : Math.floor(keep / 2)) {
    for (const [k, v] of Object.entries(data)) if (Array.isArray(v)) out[k] = v.slice(0, keep);
    if (JSON.stringify(out).length <= MAX_COMMAND_DATA) return out;
  }
  return { truncated: true, note: 'result too large to send' };
}
