// `xiaoan serve` — the dashboards tier alone (API, live alarm console, pages) on a database that
// ingest workers fill; and `xiaoan user add` to create dashboard accounts.
import { parseArgs, untilSignal, UserError, type Command } from '../command.ts';

function databaseUrl(flags: Record<string, string | true>, env: NodeJS.ProcessEnv): string {
  const url = typeof flags.database === 'string' ? flags.database : env.DATABASE_URL || `pglite:${env.XIAOAN_DATA ?? './data'}/pg`;
  return url;
}

export const serve: Command = {
  name: 'serve',
  summary: { zh: '运行看板层（接口、实时告警台、页面）', en: 'run the dashboards tier (API, live alarm console, pages)' },
  usage:
    'serve [--config FILE] [--port N] [--host ADDR] [--database URL] [--rules DIR] [--cameras FILE]\n\n' +
    '--config FILE (or XIAOAN_SERVE_CONFIG): YAML with tier: serve — database {url, password}, http {port, host}, logLevel;\n' +
    'XIAOAN_* variables override it (`xiaoan config env serve`); flags override both.\n' +
    '环境变量 Environment: PORT (8080), HOST (127.0.0.1), DATABASE_URL (pglite:./data/pg), XIAOAN_SECURE_COOKIES=1 behind HTTPS.\n' +
    '--cameras FILE: JSON {"gatewayId/deviceId": "rtsp://user:pass@camera/stream", …} for the live view (ffmpeg on this host).\n' +
    '账号用 `xiaoan user add` 创建 Create accounts with `xiaoan user add`.',
  async run(args, io) {
    const { flags } = parseArgs(args);
    // A config file (deployments) or the environment; flags and the plain PORT/HOST/DATABASE_URL
    // of a developer's shell override it.
    const file = typeof flags.config === 'string' ? flags.config : io.env.XIAOAN_SERVE_CONFIG;
    const fromFile = file || Object.keys(io.env).some((k) => k.startsWith('XIAOAN_DATABASE__') || k.startsWith('XIAOAN_HTTP__'));
    let config: import('../config/serve.ts').ServeFileConfig | undefined;
    const cfgMod = await import('../config/index.ts');
    for (const l of cfgMod.unknownEnvWarnings(cfgMod.unknownEnv(io.env))) io.err(l);
    if (fromFile) {
      config = file ? await cfgMod.loadConfig(file, 'serve', { env: io.env }) : cfgMod.configFromEnv('serve', io.env);
    }
    const port = Number(flags.port ?? io.env.PORT ?? config?.http.port ?? 8080);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError(`--port/PORT "${flags.port ?? io.env.PORT}" must be a port number 0–65535`);
    const host = typeof flags.host === 'string' ? flags.host : io.env.HOST || config?.http.host || '127.0.0.1';
    let url = databaseUrl(flags, io.env);
    if (config && typeof flags.database !== 'string' && !io.env.DATABASE_URL) {
      const { databaseConnectionUrl } = await import('../config/common.ts');
      url = databaseConnectionUrl(config.database);
    }
    const { createLogger } = await import('../../contract/index.ts');
    const { openStore } = await import('../../ingest/index.ts');
    const { createAlerting, loadLibrary } = await import('../../ingest/alerts/index.ts');
    const { createDashboardServer, createRulesService, createCameraService } = await import('../../dashboards/index.ts');
    const rulesLib = await import('../../rules/index.ts');
    const { loadProfiles } = await import('../../device-drivers/index.ts');
    const { systemClock } = await import('../../contract/index.ts');
    const log = createLogger({ unit: 'serve', ...(config?.logLevel ? { level: config.logLevel } : {}) });
    const store = await openStore(url, { log });
    const rules = await loadLibrary(...(typeof flags.rules === 'string' ? [flags.rules] : []));
    if (rules.errors.length) throw new UserError(`规则有误 rule errors:\n${rules.errors.map((e) => `  ${e.file} ${e.rule ?? ''} ${e.path}: ${e.message}`).join('\n')}`);
    // Alerts are evaluated by the ingest workers; here only read, acknowledged and resolved.
    const alerting = await createAlerting({ db: store.db, rules, log, tickMs: 0 });
    let cameras;
    if (typeof flags.cameras === 'string') {
      const { readFile } = await import('node:fs/promises');
      let map: unknown;
      try {
        map = JSON.parse(await readFile(flags.cameras, 'utf8'));
      } catch (e) {
        throw new UserError(`--cameras ${flags.cameras}: ${(e as Error).message} (expected JSON {"gatewayId/deviceId": "rtsp://…"})`);
      }
      if (!map || typeof map !== 'object' || Object.values(map).some((v) => typeof v !== 'string')) {
        throw new UserError(`--cameras ${flags.cameras}: expected an object of "gatewayId/deviceId": "rtsp://…" strings`);
      }
      cameras = createCameraService(map as Record<string, string>);
    }
    const extras = {
      profiles: (await loadProfiles()).map((p) => ({ id: p.id, protocol: p.protocol, description: p.description, category: (p as { category?: string }).category })),
      rules: await createRulesService({ db: store.db, store, alerting, lib: rulesLib, initial: rules, clock: systemClock, log }),
      cameras,
    };
    let server;
    try {
      server = await createDashboardServer({ store, alerting, port, host, log, extras, secureCookies: io.env.XIAOAN_SECURE_COOKIES === '1', trustProxy: io.env.XIAOAN_TRUST_PROXY || undefined });
    } catch (e) {
      await alerting.stop();
      await store.close();
      if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new UserError(`端口被占用 port ${port} is in use; use --port or PORT`);
      throw e;
    }
    io.out(`校安 Xiaoan 看板 dashboards: ${server.url}`);
    return untilSignal(async () => {
      await server.close();
      await alerting.stop();
      await store.close();
    });
  },
};

export const userAdd: Command = {
  name: 'user add',
  summary: { zh: '创建或更新看板账号', en: 'create or update a dashboard account' },
  usage:
    'user add --username NAME --role desk|tech|author|admin --org ORG_PATH [--name DISPLAY] [--database URL]\n\n' +
    '密码从环境变量 XIAOAN_USER_PASSWORD 读取（至少 8 位），不放在命令行上。\n' +
    'The password is read from XIAOAN_USER_PASSWORD (at least 8 characters), never from the command line.\n' +
    '例 e.g. XIAOAN_USER_PASSWORD=… xiaoan user add --username desk --role desk --org 37/3701/370102/3737000001',
  async run(args, io) {
    const { flags } = parseArgs(args);
    const need = (k: string) => {
      const v = flags[k];
      if (typeof v !== 'string' || !v) throw new UserError(`缺少 --${k} missing --${k}; see \`xiaoan user add --help\``, 2);
      return v;
    };
    const username = need('username');
    const role = need('role');
    const orgPath = need('org');
    const password = io.env.XIAOAN_USER_PASSWORD;
    if (!password) throw new UserError('请用环境变量 XIAOAN_USER_PASSWORD 给出密码 set the password in XIAOAN_USER_PASSWORD', 2);
    const { openStore } = await import('../../ingest/index.ts');
    const { seedUser, UserInputError } = await import('../../dashboards/index.ts');
    const { OrgCodeError } = await import('../../contract/index.ts');
    const store = await openStore(databaseUrl(flags, io.env));
    try {
      const u = await seedUser(store.db, { username, password, role: role as 'desk', orgPath, displayName: typeof flags.name === 'string' ? flags.name : undefined });
      io.out(JSON.stringify({ username: u.username, role: u.role, orgPath: u.orgPath }));
      return 0;
    } catch (e) {
      if (e instanceof UserInputError) throw new UserError(`--${e.field === 'orgPath' ? 'org' : e.field}: ${e.message}`, 2);
      if (e instanceof OrgCodeError) throw new UserError(`--org: ${e.message}`, 2);
      throw e;
    } finally {
      await store.close();
    }
  },
};
