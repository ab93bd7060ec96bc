// `xiaoan edge --config FILE` runs a school gateway against any MQTT broker.
// `xiaoan device add|list|test|remove|import` — the technician's enrolment commands. They work on
// the gateway's registry (SQLite in dataDir). add and test go through the running gateway's REST
// API when it answers (so MQTT devices are tested on the gateway's own device broker), else they
// work on the file directly; the running gateway picks file changes up within seconds.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { redact } from '../../contract/index.ts';
import { scrubSecrets } from '../../edge/commands.ts';
import {
  ConfigError as EdgeConfigError,
  createGateway,
  edgeConfigSchema,
  formatProblem,
  loadEdgeConfigFile,
  resolvePaths,
  EnrolmentError,
  loadDefaultDriverKit,
  openRegistry,
  validateDeviceCsv,
  type EdgeConfig,
  type Registry,
  type Problem,
} from '../../edge/index.ts';
import { parseArgs, untilSignal, UserError, type Command, type CommandIo } from '../command.ts';
import { createLogger, silentLogger } from '../../contract/index.ts';

async function loadConfigFor(args: { flags: Record<string, string | true> }, io: CommandIo): Promise<EdgeConfig> {
  const file = typeof args.flags.config === 'string' ? args.flags.config : io.env.XIAOAN_EDGE_CONFIG;
  if (!file) throw new UserError('需要网关配置文件 give the gateway config: --config FILE (or XIAOAN_EDGE_CONFIG)', 2);
  try {
    // When the CLI's config loader validates edge files with this same schema, use it: it adds
    // environment overrides (XIAOAN_UPLINK__PASSWORD_FILE …) and line numbers.
    const cli = (await import('../config/index.ts').catch(() => null)) as null | {
      edgeSchema?: unknown;
      loadConfig?: (file: string, tier: 'edge', opts?: { env?: NodeJS.ProcessEnv }) => Promise<unknown>;
    };
    if (cli?.loadConfig && cli.edgeSchema === edgeConfigSchema) {
      return resolvePaths((await cli.loadConfig(file, 'edge', { env: io.env })) as EdgeConfig, file);
    }
    return loadEdgeConfigFile(file);
  } catch (e) {
    if (e instanceof EdgeConfigError) throw new UserError(e.message);
    throw e;
  }
}

export const edge: Command = {
  name: 'edge',
  summary: { zh: '运行学校边缘网关', en: 'run a school edge gateway' },
  usage:
    'edge --config FILE\n\n' +
    '  FILE: YAML or JSON (tier: edge) — gatewayId, county, site, uplink {url, username, password, tls}, dataDir,\n' +
    '  deviceBroker {port, host}, http {port, host, token}, devices [...], buffer {maxRecords, maxBytes, replayPerSecond}.\n' +
    '  Every problem of the file is reported at once. Stops cleanly on SIGINT/SIGTERM; a kill loses nothing buffered.',
  async run(args, io) {
    const parsed = parseArgs(args);
    const config = await loadConfigFor(parsed, io);
    const cfgMod = await import('../config/index.ts');
    for (const l of cfgMod.unknownEnvWarnings(cfgMod.unknownEnv(io.env))) io.err(l);
    const log = createLogger({ level: config.logLevel });
    const gw = await createGateway(config, { log });
    await gw.start();
    const st = gw.status();
    io.err(`校安网关已启动 Xiaoan gateway ${config.gatewayId} running`);
    io.err(`  上行 uplink: ${String(redact(config.uplink.url))} (${st.buffer.depth} buffered, seq ${st.buffer.lastSeq})`);
    io.err(`  接口 REST/metrics: ${gw.http?.url}  (/api/devices, /metrics, /healthz)`);
    if (gw.deviceBroker) io.err(`  设备代理 device broker: mqtt://${config.deviceBroker.host}:${gw.deviceBroker.port}`);
    io.out(JSON.stringify({ gateway: config.gatewayId, http: gw.http?.url, deviceBrokerPort: gw.deviceBroker?.port ?? null, seq: st.buffer.lastSeq, depth: st.buffer.depth }));
    return untilSignal(() => gw.stop());
  },
};

// ---- device commands -------------------------------------------------------------------------

const DEVICE_FLAGS = ['id', 'profile', 'url', 'name', 'building', 'room', 'interval-ms', 'password'];

function deviceFromFlags(flags: Record<string, string | true>, io: CommandIo): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  for (const f of DEVICE_FLAGS) {
    const v = flags[f];
    if (v === undefined) continue;
    if (v === true) throw new UserError(`--${f} needs a value`, 2);
    if (f === 'interval-ms') d.intervalMs = /^\d+$/.test(v) ? Number(v) : v;
    else d[f] = v;
  }
  // keeps the device password out of shell history
  if (d.password === undefined && io.env.XIAOAN_DEVICE_PASSWORD) d.password = io.env.XIAOAN_DEVICE_PASSWORD;
  return d;
}

/** The running gateway's API, when it answers. */
async function liveApi(config: EdgeConfig): Promise<null | ((method: string, path: string, body?: string, type?: string) => Promise<{ status: number; json: unknown }>)> {
  const host = config.http.host === '0.0.0.0' ? '127.0.0.1' : config.http.host === '::' ? '[::1]' : config.http.host;
  if (!config.http.port) return null;
  const base = `http://${host}:${config.http.port}`;
  try {
    const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1500) });
    const j = (await r.json()) as { status?: string };
    if (!j.status || j.status === 'stopped') return null;
  } catch {
    return null;
  }
  // the gateway's API always wants a token: configured, or generated into the data folder
  const { readEdgeToken } = await import('../../edge/http.ts');
  const token = readEdgeToken(config.http.token, config.dataDir);
  return async (method, path, body, type = 'application/json') => {
    const r = await fetch(base + path, {
      method,
      headers: { 'content-type': type, ...(token ? { authorization: `Bearer ${token}` } : {}) },
      ...(body !== undefined ? { body } : {}),
      signal: AbortSignal.timeout(60_000),
    });
    return { status: r.status, json: await r.json().catch(() => ({})) };
  };
}

function printProblems(io: CommandIo, problems: Problem[]): void {
  for (const p of problems) io.out(formatProblem(p));
}

function failFromApi(io: CommandIo, res: { status: number; json: unknown }): number {
  const j = res.json as { error?: string; problems?: Problem[] };
  if (j.problems) {
    printProblems(io, j.problems);
    io.err(`${j.problems.length} 处错误 problem(s); nothing was saved`);
  } else io.err(j.error ?? `gateway answered HTTP ${res.status}`);
  return 1;
}

async function withLocalGateway<T>(config: EdgeConfig, fn: (gw: Awaited<ReturnType<typeof createGateway>>) => Promise<T>): Promise<T> {
  const gw = await createGateway(config, { log: silentLogger });
  try {
    return await fn(gw);
  } finally {
    await gw.stop().catch(() => {});
  }
}

/** list / remove / import need only the registry file, never the buffer a running gateway holds. */
async function withRegistry<T>(config: EdgeConfig, fn: (r: Registry) => Promise<T>): Promise<T> {
  const r = openRegistry(join(config.dataDir, 'registry.sqlite'), Date.now, { secretKey: config.edgeSecretKey });
  try {
    return await fn(r);
  } finally {
    r.close();
  }
}

export const deviceAdd: Command = {
  name: 'device add',
  summary: { zh: '登记设备（先实时测试再保存）', en: 'enrol a device: test it live, then save' },
  usage:
    'device add --config FILE --id ID --profile PROFILE --url URL [--name N] [--building B] [--room R] [--interval-ms MS]\n' +
    '           [--password P | XIAOAN_DEVICE_PASSWORD=P] [--no-test] [--replace]\n\n' +
    '  e.g. xiaoan device add --config gw.yaml --id smoke-2 --profile smoke-photoelectric-generic --url "modbus-tcp://10.0.3.21:502?unit=1"\n' +
    '  MQTT devices (mqtt://DEVICE-ID) need the password they log in to the gateway\'s device broker with.',
  async run(args, io) {
    const parsed = parseArgs(args, ['no-test', 'replace', 'json']);
    const config = await loadConfigFor(parsed, io);
    const device = deviceFromFlags(parsed.flags, io);
    const test = !parsed.flags['no-test'];
    const api = await liveApi(config);
    if (api) {
      const q = test ? '' : '?test=false';
      const res = parsed.flags.replace
        ? await api('PUT', `/api/devices/${encodeURIComponent(String(device.id ?? ''))}${q}`, JSON.stringify(device))
        : await api('POST', `/api/devices${q}`, JSON.stringify(device));
      if (res.status >= 300) return failFromApi(io, res);
      io.out(JSON.stringify(scrubSecrets(res.json, [])));
      io.err(`已登记 enrolled ${String(device.id)} (via the running gateway)`);
      return 0;
    }
    return withLocalGateway(config, async (gw) => {
      try {
        const r = await gw.enrol(device, { test, source: 'cli', replace: !!parsed.flags.replace });
        io.out(JSON.stringify(scrubSecrets({ device: r.device, test: r.test }, [])));
        io.err(`已登记 enrolled ${r.device.id}${r.test ? ` — ${r.test.message}` : ' (not tested)'}; the gateway picks it up within seconds`);
        return 0;
      } catch (e) {
        if (!(e instanceof EnrolmentError)) throw e;
        printProblems(io, e.problems);
        io.err(`${e.problems.length} 处错误 problem(s); nothing was saved`);
        return 1;
      }
    });
  },
};

export const deviceList: Command = {
  name: 'device list',
  summary: { zh: '列出已登记设备', en: 'list enrolled devices' },
  usage: 'device list --config FILE [--json]',
  async run(args, io) {
    const parsed = parseArgs(args, ['json']);
    const config = await loadConfigFor(parsed, io);
    const api = await liveApi(config);
    let rows: Array<Record<string, unknown>>;
    if (api) {
      const res = await api('GET', '/api/devices');
      if (res.status >= 300) return failFromApi(io, res);
      rows = res.json as Array<Record<string, unknown>>;
    } else {
      rows = await withRegistry(config, async (r) => r.list() as unknown as Array<Record<string, unknown>>);
    }
    if (parsed.flags.json) {
      for (const r of rows) io.out(JSON.stringify(scrubSecrets(r, [])));
      return 0;
    }
    const cols = ['id', 'profile', 'url', 'state', 'name', 'source'];
    const cell = (r: Record<string, unknown>, c: string) => String(r[c] ?? (c === 'state' ? (api ? '' : '(gateway not running)') : '')).replace(/\/\/[^:/@\s]+:[^@\s]*@/, '//***@'); // url passwords never printed
    const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r, c).length)));
    io.out(cols.map((c, i) => c.padEnd(widths[i]!)).join('  '));
    for (const r of rows) io.out(cols.map((c, i) => cell(r, c).padEnd(widths[i]!)).join('  '));
    io.err(`${rows.length} 台设备 device(s)`);
    return 0;
  },
};

export const deviceTest: Command = {
  name: 'device test',
  summary: { zh: '实时测试设备（不保存）', en: 'test a device live without saving' },
  usage: 'device test --config FILE ID\n       device test --config FILE --id ID --profile PROFILE --url URL   (not enrolled yet)',
  async run(args, io) {
    const parsed = parseArgs(args, ['json']);
    const config = await loadConfigFor(parsed, io);
    const id = parsed.positional[0];
    const spec = id ? undefined : deviceFromFlags(parsed.flags, io);
    if (!id && !spec?.profile) throw new UserError('give an enrolled device ID, or --id --profile --url of a new one', 2);
    const api = await liveApi(config);
    let result: { ok: boolean; message: string };
    if (api) {
      const res = id ? await api('POST', `/api/devices/${encodeURIComponent(id)}/test`) : await api('POST', '/api/devices/test', JSON.stringify(spec));
      if (res.status >= 300) return failFromApi(io, res);
      result = res.json as { ok: boolean; message: string };
    } else {
      try {
        result = await withLocalGateway(config, (gw) => gw.testDevice(id ?? spec));
      } catch (e) {
        if (!(e instanceof EnrolmentError)) throw e;
        printProblems(io, e.problems);
        return 1;
      }
    }
    io.out(JSON.stringify(scrubSecrets(result, [])));
    io.err(`${result.ok ? '通过 PASS' : '失败 FAIL'}: ${result.message}`);
    return result.ok ? 0 : 1;
  },
};

export const deviceRemove: Command = {
  name: 'device remove',
  summary: { zh: '注销设备', en: 'remove an enrolled device' },
  usage: 'device remove --config FILE ID',
  async run(args, io) {
    const parsed = parseArgs(args);
    const config = await loadConfigFor(parsed, io);
    const id = parsed.positional[0] ?? (typeof parsed.flags.id === 'string' ? parsed.flags.id : undefined);
    if (!id) throw new UserError('give the device ID: xiaoan device remove --config FILE ID', 2);
    const removed = await withRegistry(config, async (r) => r.remove(id));
    if (!removed) throw new UserError(`未登记的设备 device "${id}" is not enrolled`);
    io.err(`已注销 removed ${id}; a running gateway stops polling it within seconds`);
    return 0;
  },
};

export const deviceImport: Command = {
  name: 'device import',
  summary: { zh: '从 CSV 批量登记设备', en: 'bulk-enrol devices from a CSV file' },
  usage:
    'device import --config FILE DEVICES.csv\n\n' +
    '  Header: id,profile,url[,name,building,room,intervalMs,password]. The file is checked as a whole: every\n' +
    '  problem is listed with its row and field, and nothing is saved unless every row is valid.',
  async run(args, io) {
    const parsed = parseArgs(args, ['json']);
    const config = await loadConfigFor(parsed, io);
    const file = parsed.positional[0];
    if (!file) throw new UserError('give the CSV file: xiaoan device import --config FILE DEVICES.csv', 2);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new UserError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const profiles = await (await loadDefaultDriverKit()).loadProfiles();
    const v = validateDeviceCsv(text, profiles);
    if (v.problems.length) {
      printProblems(io, v.problems);
      io.err(`${file}: ${v.problems.length} 处错误 problem(s); nothing was imported`);
      return 1;
    }
    return withRegistry(config, async (reg) => {
      const added: string[] = [];
      const updated: string[] = [];
      for (const d of v.devices) (reg.get(d.id) ? updated : added).push(d.id);
      reg.upsertMany(v.devices, 'cli-import');
      io.out(JSON.stringify({ added, updated }));
      io.err(`已导入 imported ${added.length} new, ${updated.length} updated from ${file}; a running gateway picks them up within seconds`);
      return 0;
    });
  },
};

export const edgeCommands: Command[] = [edge, deviceAdd, deviceList, deviceTest, deviceRemove, deviceImport];
