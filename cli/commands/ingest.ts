// `xiaoan ingest` — one ingest worker: consumes a region's uplink from the central broker (MQTT 5
// shared subscription), stores it in PostgreSQL / TimescaleDB (optionally InfluxDB too), evaluates
// the alert rules, and serves /healthz and /metrics. Configured by a `tier: ingest` file
// (`--config FILE`) or by the environment alone (XIAOAN_* variables, see `xiaoan config env ingest`).
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { parseArgs, untilSignal, UserError, type Command } from '../command.ts';

export const ingest: Command = {
  name: 'ingest',
  summary: { zh: '运行接入工作进程（MQTT → PostgreSQL/TimescaleDB，可选 InfluxDB）', en: 'run an ingest worker (MQTT → PostgreSQL/TimescaleDB, optionally InfluxDB)' },
  usage:
    'ingest [--config FILE] [--region CODE] [--replica NAME] [--share-group NAME] [--no-rules] [--seed-org]\n\n' +
    '  FILE: YAML (tier: ingest) — region, replica, shareGroup, database {url}, broker {url, username, password, clientId, tls},\n' +
    '  http {port, host}, influx {url, bufferMax}, rules {dirs}, delivery {...}. Without --config the environment alone\n' +
    '  configures it (XIAOAN_BROKER__URL, XIAOAN_DATABASE__URL, XIAOAN_BROKER__PASSWORD_FILE …; `xiaoan config env ingest`).\n' +
    '  Several workers with the same region and shareGroup split the traffic (MQTT 5 $share); each needs its own\n' +
    '  replica name (client ids xiaoan-ingest-{region}-{replica}-…; a second worker under a taken name is refused).\n' +
    '  Started before PostgreSQL is up, it waits (with backoff, saying so) instead of exiting.\n' +
    '  --seed-org seeds the org tree (Shandong and its 16 cities). GET /healthz and /metrics on http.port (8082).',
  async run(args, io) {
    const { flags } = parseArgs(args, ['no-rules', 'seed-org']);
    const cfgMod = await import('../config/index.ts');
    const file = typeof flags.config === 'string' ? flags.config : io.env.XIAOAN_INGEST_CONFIG;
    const config = file ? await cfgMod.loadConfig(file, 'ingest', { env: io.env }) : cfgMod.configFromEnv('ingest', io.env);
    const region = typeof flags.region === 'string' ? flags.region : config.region;
    const shareGroup = typeof flags['share-group'] === 'string' ? flags['share-group'] : config.shareGroup;
    const replica = typeof flags.replica === 'string' ? flags.replica : config.replica;
    for (const l of cfgMod.unknownEnvWarnings(cfgMod.unknownEnv(io.env))) io.err(l);

    const { createLogger, parseRegionCode } = await import('../../contract/index.ts');
    try {
      parseRegionCode(region);
    } catch (e) {
      throw new UserError(`--region: ${(e as Error).message}`, 2);
    }
    const ing = await import('../../ingest/index.ts');
    const log = createLogger({ level: config.logLevel });
    // PostgreSQL may not be up yet (a host booting, compose starting everything at once): wait for it.
    const waiting = new AbortController();
    const stopWaiting = () => waiting.abort();
    process.once('SIGINT', stopWaiting);
    process.once('SIGTERM', stopWaiting);
    let store: import('../../ingest/index.ts').Store;
    try {
      store = await ing.openStoreWhenReady(cfgMod.databaseConnectionUrl(config.database), { log, signal: waiting.signal });
    } finally {
      process.off('SIGINT', stopWaiting);
      process.off('SIGTERM', stopWaiting);
    }
    const closers: Array<() => Promise<void>> = [async () => store.close()];
    const closeAll = async () => {
      for (const c of closers.reverse()) await c().catch((e) => log.error('shutdown step failed', { error: e as Error }));
    };
    try {
      if (flags['seed-org']) await store.seedOrgTree();
      const listeners: import('../../ingest/index.ts').BatchListener[] = [];

      let influx: import('../../ingest/index.ts').InfluxSink | undefined;
      if (config.influx) {
        influx = await ing.createInfluxSink({ url: config.influx.url, username: config.influx.username, password: config.influx.password, bufferMax: config.influx.bufferMax, log });
        closers.push(() => influx!.close());
      }

      const tls = config.broker.tls
        ? {
            ...(config.broker.tls.ca ? { ca: await readFile(config.broker.tls.ca) } : {}),
            ...(config.broker.tls.cert ? { cert: await readFile(config.broker.tls.cert) } : {}),
            ...(config.broker.tls.key ? { key: await readFile(config.broker.tls.key) } : {}),
            rejectUnauthorized: config.broker.tls.rejectUnauthorized,
          }
        : undefined;
      const worker = await ing.createIngestWorker({
        store,
        brokerUrl: config.broker.url,
        username: config.broker.username,
        password: config.broker.password ?? '',
        region,
        replica,
        shareGroup,
        listeners,
        log,
        ...(config.broker.clientId ? { clientId: config.broker.clientId } : {}),
        ...(tls ? { tls } : {}),
      });

      let alertingHealth: (() => unknown) | undefined;
      if (!flags['no-rules']) {
        const alerts = await import('../../ingest/alerts/index.ts');
        const rules = await alerts.loadLibrary(...config.rules.dirs.filter((d) => d !== 'rules/library'));
        if (rules.errors.length) {
          throw new UserError(`规则有误 rule errors:\n${rules.errors.map((e) => `  ${e.file} ${e.rule ?? ''} ${e.path}: ${e.message}`).join('\n')}`);
        }
        const d = config.delivery;
        const delivery = d?.hazardUrl && d.emergencyUrl && d.secret
          ? { hazardUrl: d.hazardUrl, emergencyUrl: d.emergencyUrl, secret: d.secret }
          : undefined;
        if (d && !delivery) log.warn('delivery needs hazardUrl, emergencyUrl and secret; alerts are kept but not delivered (告警暂不推送)');
        const alerting = await alerts.createAlerting({
          db: store.db, rules, log, commands: worker.commands, region: regionOrgPath(region),
          // change control: versions saved from the rules page or edits to these folders reload here too
          rulebook: { dirs: config.rules.dirs.filter((d) => d !== 'rules/library'), watch: true },
          ...(delivery ? { delivery } : {}),
        });
        listeners.push(alerting.listener);
        closers.push(() => alerting.stop());
        alertingHealth = () => 'on';
      }
      if (influx) listeners.push(influx.listener);

      try {
        await worker.start();
      } catch (e) {
        if (e instanceof ing.WorkerIdentityTakenError) throw new UserError(e.message);
        throw e;
      }
      closers.push(() => worker.stop());

      const server = createServer((req, res) => {
        const s = worker.stats();
        if (req.url === '/healthz') {
          const healthy = s.storage === 'ok' && Object.values(s.lanes).every((l) => l.state === 'connected');
          res.writeHead(healthy ? 200 : 503, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ ok: healthy, ...s, influx: influx?.stats() ?? null, rules: alertingHealth?.() ?? 'off' }));
          return;
        }
        if (req.url === '/metrics') {
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
          res.end(ingestMetrics(s, influx?.stats()));
          return;
        }
        res.writeHead(404).end();
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e: NodeJS.ErrnoException) =>
          reject(e.code === 'EADDRINUSE' ? new UserError(`端口被占用 http port ${config.http.port} is in use; set http.port`) : e));
        server.listen(config.http.port, config.http.host, () => resolve());
      });
      closers.push(() => new Promise<void>((r) => server.close(() => r())));
      const addr = server.address();
      io.err(`校安 Xiaoan ingest: region ${region}, replica ${replica}, share group ${shareGroup}, broker ${config.broker.url.replace(/\/\/[^@/]*@/, '//***@')}, ` +
        `health http://${config.http.host}:${typeof addr === 'object' && addr ? addr.port : config.http.port}/healthz`);
      return untilSignal(closeAll);
    } catch (e) {
      await closeAll();
      throw e;
    }
  },
};

/** '3701' → '37/3701'; the alerting's region is an org path. */
function regionOrgPath(region: string): string {
  return [region.slice(0, 2), region.length >= 4 ? region.slice(0, 4) : '', region.length === 6 ? region : ''].filter(Boolean).join('/');
}

/** Prometheus text exposition of a worker's stats. */
export function ingestMetrics(s: import('../../ingest/index.ts').IngestStats, influx?: import('../../ingest/index.ts').InfluxSinkStats): string {
  const lines: string[] = [];
  const m = (name: string, help: string, type: 'counter' | 'gauge', values: Array<[Record<string, string>, number]>) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of values) {
      const l = Object.entries(labels).map(([k, x]) => `${k}="${x}"`).join(',');
      lines.push(`${name}${l ? `{${l}}` : ''} ${v}`);
    }
  };
  m('xiaoan_ingest_received_total', 'records received', 'counter', [[{ kind: 'readings' }, s.received.readings], [{ kind: 'events' }, s.received.events], [{ kind: 'status' }, s.received.status]]);
  m('xiaoan_ingest_stored_total', 'records stored (new)', 'counter', [[{ kind: 'readings' }, s.stored.readings], [{ kind: 'events' }, s.stored.events]]);
  m('xiaoan_ingest_duplicates_total', 'redelivered records skipped', 'counter', [[{ kind: 'readings' }, s.duplicates.readings], [{ kind: 'events' }, s.duplicates.events]]);
  m('xiaoan_ingest_dead_letters_total', 'messages dead-lettered', 'counter', Object.entries(s.deadLetters.byReason).map(([reason, n]) => [{ reason }, n]));
  m('xiaoan_ingest_awaiting_registration_total', 'records of gateways not registered centrally, left on their gateway (xiaoan gateway add)', 'counter', [[{}, s.awaitingRegistration]]);
  m('xiaoan_ingest_receipts_total', 'receipts published to gateways after commits', 'counter', [[{ result: 'published' }, s.receipts.published], [{ result: 'failed' }, s.receipts.failed]]);
  m('xiaoan_ingest_pending_records', 'records received, not yet committed', 'gauge', [[{}, s.pendingRecords]]);
  m('xiaoan_ingest_storage_retries_total', 'retryable storage failures', 'counter', [[{}, s.storageRetries]]);
  m('xiaoan_ingest_lag_ms', 'age of the newest committed batch at commit', 'gauge', [[{}, s.lagMs ?? 0]]);
  m('xiaoan_ingest_lane_connected', 'broker connection up', 'gauge', Object.entries(s.lanes).map(([lane, l]) => [{ lane }, l.state === 'connected' ? 1 : 0]));
  if (influx) {
    m('xiaoan_influx_written_total', 'points written to InfluxDB', 'counter', [[{}, influx.written]]);
    m('xiaoan_influx_dropped_total', 'points dropped (buffer full or refused)', 'counter', [[{ why: 'buffer_full' }, influx.dropped], [{ why: 'refused' }, influx.rejected]]);
    m('xiaoan_influx_buffered', 'points waiting for InfluxDB', 'gauge', [[{}, influx.buffered]]);
  }
  return lines.join('\n') + '\n';
}
