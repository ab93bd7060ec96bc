// Device pages for technicians: the device list with health and trouble counters, and enrol /
// import / test / remove / discover through commands to the gateway (CommandSender). A command
// goes only to a gateway inside the user's scope; the gateway checks and audits it again.

import { randomUUID } from 'node:crypto';
import { commandSchema, deviceIdSchema, type Command, type CommandResult } from '../contract/index.ts';
import { z } from 'zod';
import type { ApiRouter, RequestContext } from './routes.ts';
import type { ApiDeps, Closer } from './api.ts';
import { audit, siteScope } from './api.ts';
import { ApiError, badRequest } from './http.ts';
import { deviceInput, gatewayDeviceParams, gatewayParams, orgPathParam } from './schemas.ts';

/** The downlink command kinds this build of the contract knows (device.upsert, device.write, rebirth…). */
export function supportedCommandKinds(): string[] {
  const opts = (commandSchema as unknown as { options: { shape: { kind: { value: string } } }[] }).options;
  return opts.map((o) => o.shape.kind.value);
}

const DEVICE_FIELDS = ['id', 'profile', 'url', 'name', 'building', 'room', 'intervalMs', 'password'] as const;

/** RFC 4180 CSV: quoted cells, doubled quotes, CRLF or LF. */
export function parseCsvRows(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  const s = text.replace(/^\uFEFF/, '');
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quoted) {
      if (c === '"' && s[i + 1] === '"') { cell += '"'; i++; }
      else if (c === '"') quoted = false;
      else cell += c;
      continue;
    }
    if (c === '"' && cell === '') quoted = true;
    else if (c === ',') { row.push(cell); cell = ''; }
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && s[i + 1] === '\n') i++;
      row.push(cell); rows.push(row); row = []; cell = '';
    } else cell += c;
  }
  if (cell !== '' || row.length) { row.push(cell); rows.push(row); }
  return rows.filter((r) => !(r.length === 1 && r[0]!.trim() === ''));
}

/** Devices from a CSV whose header names the columns (id,profile,url required). Problems name row and column. */
export function devicesFromCsv(text: string): { devices: Record<string, unknown>[]; problems: string[] } {
  const rows = parseCsvRows(text);
  const problems: string[] = [];
  if (rows.length < 2) return { devices: [], problems: ['第 0 行：需要表头和至少一行设备 / row 0: a header and at least one device row are needed (id,profile,url,name,building,room)'] };
  const header = rows[0]!.map((x) => x.trim());
  for (const h of header) if (!(DEVICE_FIELDS as readonly string[]).includes(h)) problems.push(`第 0 行 row 0, ${h || '(空 empty)'}: 未知列 unknown column; columns are ${DEVICE_FIELDS.join(',')}`);
  for (const need of ['id', 'profile', 'url']) if (!header.includes(need)) problems.push(`第 0 行 row 0, ${need}: 缺少必需列 required column missing`);
  if (problems.length) return { devices: [], problems };
  const devices: Record<string, unknown>[] = [];
  rows.slice(1).forEach((cells, k) => {
    const row = k + 1;
    if (cells.length !== header.length) {
      problems.push(`第 ${row} 行 row ${row}: ${cells.length} 列，表头有 ${header.length} 列 / has ${cells.length} cells, the header has ${header.length}`);
      return;
    }
    const d: Record<string, unknown> = {};
    header.forEach((h, j) => {
      const v = cells[j]!.trim();
      if (v !== '') d[h] = h === 'intervalMs' && /^\d+$/.test(v) ? Number(v) : v;
    });
    if (!deviceIdSchema.safeParse(d.id).success) problems.push(`第 ${row} 行 row ${row}, id: "${String(d.id ?? '')}" 不是有效设备编号 is not a valid device id`);
    else devices.push(d);
  });
  return { devices, problems };
}

export async function registerDeviceApi(api: ApiRouter, deps: ApiDeps): Promise<Closer[]> {
  const { store, commands } = deps;

  /** The gateway, when it lies in the user's scope (else 404: never reveal other schools' gateways). */
  async function gatewayInScope(ctx: RequestContext, gatewayId: string) {
    if (!deviceIdSchema.safeParse(gatewayId).success) throw badRequest('bad_gateway', `"${gatewayId}" 不是网关编号`, `"${gatewayId}" is not a gateway id`);
    const list = (await store.queries.listGateways?.(ctx.principal.scope)) as { id: string; orgPath: string; state: string }[] | undefined;
    const gw = list?.find((g) => g.id === gatewayId);
    if (!gw) throw new ApiError(404, 'no_such_gateway', { zh: `网关 ${gatewayId} 不存在或不在您的管辖范围内`, en: `gateway ${gatewayId} does not exist or is outside your scope` });
    return gw;
  }

  async function send(ctx: RequestContext, gatewayId: string, cmd: Record<string, unknown>, timeoutMs = 15_000): Promise<CommandResult> {
    if (!commands) {
      throw new ApiError(503, 'no_command_channel', { zh: '未连接到网关命令通道', en: 'no command channel to the gateways is connected' });
    }
    const full = { v: 1, id: randomUUID(), issuedBy: ctx.principal.user.username, issuedAt: api.clock.now(), ...cmd };
    const parsed = commandSchema.safeParse(full);
    if (!parsed.success) {
      const kind = String(cmd.kind);
      if (!supportedCommandKinds().includes(kind)) {
        throw new ApiError(501, 'command_not_supported', {
          zh: `网关协议 v1 尚不支持命令 ${kind}（支持：${supportedCommandKinds().join('、')}）；请在网关本地操作（xiaoan device …）`,
          en: `wire contract v1 has no ${kind} command yet (it has ${supportedCommandKinds().join(', ')}); do this on the gateway itself (xiaoan device …)`,
        });
      }
      throw badRequest('bad_command', `命令无效：${parsed.error.issues[0]?.message}`, `invalid command: ${parsed.error.issues[0]?.message}`);
    }
    try {
      return await commands.send(gatewayId, parsed.data as Command, timeoutMs);
    } catch (e) {
      throw new ApiError(504, 'gateway_unreachable', {
        zh: `网关 ${gatewayId} 未在时限内应答：${(e as Error).message}（网关离线时请稍后重试）`,
        en: `gateway ${gatewayId} did not answer in time: ${(e as Error).message} (retry when it is online)`,
      }, { retry: true });
    }
  }

  function checkDevice(d: unknown): Record<string, unknown> {
    if (!d || typeof d !== 'object' || Array.isArray(d)) throw badRequest('bad_device', '缺少设备信息 device', 'device is missing');
    const dev = d as Record<string, unknown>;
    const unknown = Object.keys(dev).filter((k) => !(DEVICE_FIELDS as readonly string[]).includes(k));
    if (unknown.length) throw badRequest('bad_device', `未知字段：${unknown.join(', ')}`, `unknown field(s): ${unknown.join(', ')}`);
    for (const f of ['id', 'profile', 'url'] as const) {
      if (typeof dev[f] !== 'string' || !(dev[f] as string).trim()) throw badRequest('bad_device', `device.${f} 必填`, `device.${f} is required`);
    }
    if (!deviceIdSchema.safeParse(dev.id).success) throw badRequest('bad_device', `device.id "${String(dev.id)}" 须为字母、数字、. _ -`, `device.id "${String(dev.id)}" must be letters, digits, . _ -`);
    return dev;
  }

  api.route('GET', '/api/gateways', { permission: 'devices.read', scope: 'org-subtree', summary: 'Gateways of your subtree and the command kinds they take', query: z.object({ site: orgPathParam }) }, async (ctx) => {
    const gateways = (await store.queries.listGateways?.(siteScope(ctx))) ?? [];
    ctx.send(200, { gateways, commands: commands ? supportedCommandKinds() : [] });
  });

  api.route('GET', '/api/devices/trouble', { permission: 'devices.read', scope: 'org-subtree', summary: 'Trouble events of the last 24 h per device', query: z.object({ site: orgPathParam }) }, async (ctx) => {
    // Trouble signals of the last 24 h: device.* events (fault, offline, timeout…) per device.
    const scope = siteScope(ctx);
    const since = api.clock.now() - 24 * 3600_000;
    const events = ((await store.queries.events?.(scope, { from: since, limit: 10_000 })) ?? []) as { gatewayId: string; deviceId: string; type: string }[];
    const counts: Record<string, Record<string, number>> = {};
    for (const e of events) {
      if (!e.type.startsWith('device.') && !e.type.endsWith('.fault') && !e.type.endsWith('.tamper')) continue;
      const k = `${e.gatewayId}/${e.deviceId}`;
      counts[k] ??= {};
      counts[k]![e.type] = (counts[k]![e.type] ?? 0) + 1;
    }
    ctx.send(200, { since, counts });
  });

  api.route('GET', '/api/profiles', { permission: 'devices.read', scope: 'catalogue', summary: 'Device models (for the enrol form)' }, async (ctx) => {
    ctx.send(200, { profiles: deps.extras.profiles ?? [] });
  });

  api.route('POST', '/api/gateways/:gatewayId/devices', { permission: 'devices.manage', scope: 'org-subtree', summary: 'Enrol a device on a gateway of your subtree (device.upsert)', params: gatewayParams, body: z.object({ device: deviceInput }) }, async (ctx, { gatewayId }) => {
    const gw = await gatewayInScope(ctx, gatewayId!);
    const body = ctx.body;
    const device = checkDevice(body.device);
    const result = await send(ctx, gw.id, { kind: 'device.upsert', device });
    await audit(api, ctx, 'device.enrol', `${gw.id}/${String(device.id)}`, gw.orgPath, { ok: result.ok });
    ctx.send(result.ok ? 200 : 422, result.ok ? { result } : { result, error: { code: 'gateway_refused', message: { zh: `网关拒绝：${result.message}`, en: `the gateway refused: ${result.message}` } } });
  });

  api.route('POST', '/api/gateways/:gatewayId/import', { permission: 'devices.manage', scope: 'org-subtree', summary: 'Import devices from CSV (all rows or none)', params: gatewayParams, body: z.object({ csv: z.string().max(1024 * 1024) }), bodyLimit: 1024 * 1024 }, async (ctx, { gatewayId }) => {
    const gw = await gatewayInScope(ctx, gatewayId!);
    const body = ctx.body;
    if (typeof body.csv !== 'string') throw badRequest('bad_csv', '请提供 csv 文本', 'csv text is required');
    const { devices, problems } = devicesFromCsv(body.csv);
    if (problems.length) {
      throw new ApiError(400, 'bad_csv', { zh: `CSV 有 ${problems.length} 处问题，未导入任何设备`, en: `the CSV has ${problems.length} problem(s); nothing was imported` }, { problems });
    }
    if (devices.length > 500) throw badRequest('bad_csv', '一次最多导入 500 个设备', 'at most 500 devices per import');
    const results: { id: string; ok: boolean; message?: string }[] = [];
    for (const device of devices) {
      const r = await send(ctx, gw.id, { kind: 'device.upsert', device }).catch((e: ApiError) => ({ ok: false, message: e.text?.en ?? String(e) }) as CommandResult);
      results.push({ id: String(device.id), ok: r.ok, message: r.message });
    }
    await audit(api, ctx, 'device.import', gw.id, gw.orgPath, { devices: results.length, ok: results.filter((r) => r.ok).length });
    ctx.send(200, { results });
  });

  /** 422 with the gateway's own (zh + en) reason when it refused or failed a command. */
  function refused(ctx: RequestContext, result: CommandResult, what: { zh: string; en: string }) {
    ctx.send(422, {
      result,
      error: { code: 'gateway_refused', message: { zh: `网关未能${what.zh}：${result.message ?? ''}`, en: `the gateway could not ${what.en}: ${result.message ?? ''}` } },
    });
  }

  function checkDeviceId(deviceId: string) {
    if (!deviceIdSchema.safeParse(deviceId).success) throw badRequest('bad_device', `"${deviceId}" 不是设备编号`, `"${deviceId}" is not a device id`);
  }

  // Live test on the gateway (device.test): the device is read now, nothing is saved. A test that
  // ran answers 200 with its verdict, health and observations; a refused command answers 422.
  api.route('POST', '/api/gateways/:gatewayId/devices/:deviceId/test', { permission: 'devices.manage', scope: 'org-subtree', summary: 'Read an enrolled device now (device.test); nothing is saved', params: gatewayDeviceParams }, async (ctx, { gatewayId, deviceId }) => {
    const gw = await gatewayInScope(ctx, gatewayId!);
    checkDeviceId(deviceId!);
    const result = await send(ctx, gw.id, { kind: 'device.test', device: deviceId }, 20_000);
    await audit(api, ctx, 'device.test', `${gw.id}/${deviceId}`, gw.orgPath, { ok: result.ok });
    if (!result.data) return refused(ctx, result, { zh: '测试设备', en: 'test the device' });
    const d = result.data as { health?: unknown; observations?: unknown[] };
    ctx.send(200, { result: { ok: result.ok, message: result.message, health: d.health ?? null, observations: d.observations ?? [] } });
  });

  api.route('POST', '/api/gateways/:gatewayId/devices/:deviceId/remove', { permission: 'devices.manage', scope: 'org-subtree', summary: 'Remove a device from its gateway (device.remove)', params: gatewayDeviceParams }, async (ctx, { gatewayId, deviceId }) => {
    const gw = await gatewayInScope(ctx, gatewayId!);
    checkDeviceId(deviceId!);
    const result = await send(ctx, gw.id, { kind: 'device.remove', device: deviceId });
    await audit(api, ctx, 'device.remove', `${gw.id}/${deviceId}`, gw.orgPath, { ok: result.ok });
    if (!result.ok) return refused(ctx, result, { zh: `移除设备 ${deviceId}`, en: `remove device ${deviceId}` });
    ctx.send(200, { result });
  });

  // Discovery on the school's network: ONVIF cameras (WS-Discovery; target = HOST[:PORT] for a
  // unicast probe) or the Modbus units answering on a port (target = modbus-tcp:// or modbus-rtu:// url).
  api.route('POST', '/api/gateways/:gatewayId/discover', { permission: 'devices.manage', scope: 'org-subtree', summary: "Search the school's network for ONVIF cameras or Modbus units", params: gatewayParams, body: z.object({ protocol: z.enum(['onvif', 'modbus']).optional(), target: z.string().max(300).optional(), timeoutMs: z.number().int().min(100).max(120_000).optional(), units: z.array(z.number().int().min(0).max(255)).max(256).optional() }) }, async (ctx, { gatewayId }) => {
    const gw = await gatewayInScope(ctx, gatewayId!);
    const body = ctx.body;
    const protocol = body.protocol ?? 'onvif';
    if (protocol !== 'onvif' && protocol !== 'modbus') throw badRequest('bad_discover', 'protocol 须为 onvif 或 modbus', 'protocol must be onvif or modbus');
    const target = typeof body.target === 'string' && body.target.trim() ? body.target.trim() : undefined;
    if (protocol === 'modbus' && !target) {
      throw badRequest('bad_discover', 'Modbus 搜索需要端口地址，如 modbus-tcp://192.168.1.20:502 或 modbus-rtu:///dev/ttyUSB0?baud=9600', 'Modbus discovery needs a port: modbus-tcp://HOST:PORT or modbus-rtu:///dev/ttyUSB0?baud=9600');
    }
    const timeoutMs = typeof body.timeoutMs === 'number' ? body.timeoutMs : protocol === 'onvif' ? 3000 : 20_000;
    const cmd: Record<string, unknown> = { kind: 'device.discover', protocol, timeoutMs, ...(target ? { target } : {}), ...(Array.isArray(body.units) ? { units: body.units } : {}) };
    // the gateway searches for timeoutMs; its answer gets 10 s more to come back
    const result = await send(ctx, gw.id, cmd, Math.min(timeoutMs, 120_000) + 10_000);
    await audit(api, ctx, 'device.discover', gw.id, gw.orgPath, { ok: result.ok, protocol });
    if (!result.ok) return refused(ctx, result, { zh: '搜索设备', en: 'search for devices' });
    const found = ((result.data as { found?: unknown[] } | undefined)?.found ?? []) as unknown[];
    ctx.send(200, { result: { ok: true, message: result.message, protocol, found } });
  });

  return [];
}
