// `xiaoan demo`: every tier in one process on embedded defaults — an aedes broker, PGlite (or
// PostgreSQL with DATABASE_URL), a simulated school whose devices are served by the project's
// simulators, one edge gateway, one ingest worker with the rule engine, the dashboards — and a
// fire drill staged within the first minute so a newcomer sees an alarm arrive.
//
// The same function serves the command and the end-to-end tests, so the tests run exactly the
// wiring a person starts with `npm start`.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { createLogger, systemClock, type Logger } from '../contract/index.ts';
import {
  freePort, getProfile, loadProfiles, startOnvifSimulator, startTestPatternFeed, startGateSimulator, startKioskSimulator, startButtonSimulator, startModbusSimulator,
  type ModbusProfile, type ModbusSimulator, type OnvifSimulator, type GateSimulator, type KioskSimulator, type ButtonSimulator,
} from '../device-drivers/index.ts';
import { createGateway, parseEdgeConfig, type Gateway } from '../edge/index.ts';
import { openStore, startCentralBroker, createIngestWorker, scopeOf, type Store, type IngestWorker, type CentralBroker } from '../ingest/index.ts';
import { createAlerting, grabStill, loadLibrary, startReferenceReceiver, type Alerting, type ReferenceReceiver } from '../ingest/alerts/index.ts';
import type { CommandSender } from '../ingest/index.ts';
import { createDashboardServer, createRulesService, createCameraService, seedUser, type DashboardServer } from '../dashboards/index.ts';
import * as rulesLib from '../rules/index.ts';
import { DEMO, DEMO_USERS } from './demo-school.ts';
import { loadSecretKey, seal, unseal } from '../edge/at-rest.ts';

export interface DemoOptions {
  /** where the database (PGlite), the gateway's buffer and registry, and generated secrets live */
  dataDir: string;
  /** postgres://… or pglite:DIR; default pglite:<dataDir>/pg */
  databaseUrl?: string;
  /** web console port; 0 picks a free one */
  port: number;
  host?: string;
  /** demo accounts' password; generated and kept in <dataDir>/demo-secrets.json when absent */
  password?: string;
  /** when the first drill starts (ms after start); default 20 s */
  drillAfterMs?: number;
  /** how often the drill repeats (ms); default every 15 minutes; 0 = once */
  drillEveryMs?: number;
  log?: Logger;
}

export interface Demo {
  url: string;
  password: string;
  passwordGenerated: boolean;
  store: Store;
  broker: CentralBroker;
  gateway: Gateway;
  worker: IngestWorker;
  alerting: Alerting;
  receiver: ReferenceReceiver;
  server: DashboardServer;
  sims: { smoke: ModbusSimulator; temp: ModbusSimulator; camera: OnvifSimulator; gate: GateSimulator; kiosk: KioskSimulator; button: ButtonSimulator };
  /** stage a fire drill now at smoke-1 (the drill's staged device): smoke density above threshold for `holdMs`, marked as a drill */
  stageDrill(holdMs?: number): Promise<void>;
  stop(): Promise<void>;
}

interface DemoSecrets {
  password: string;
  gatewayPassword: string;
  ingestPassword: string;
  devicePasswords: Record<string, string>;
  deliverySecret: string;
  cameraPassword: string;
  /** key of the visitor-ID hash the kiosk driver uses for watch-list matching */
  idHashKey: string;
}

const secret = () => randomBytes(12).toString('base64url');

/**
 * The demo's kept secrets (demo-secrets.json), sealed with the demo gateway's key
 * ({dataDir}/edge/secret.key, edge/at-rest.ts) like the registry's device URLs: no secret is
 * written in clear under the data dir. A file from before sealing is read and sealed again.
 */
export async function readDemoSecrets(dataDir: string): Promise<Partial<DemoSecrets>> {
  let text: string;
  try {
    text = (await readFile(join(dataDir, 'demo-secrets.json'), 'utf8')).trim();
  } catch {
    return {}; // first start
  }
  return JSON.parse(unseal(loadSecretKey(join(dataDir, 'edge')), text)) as Partial<DemoSecrets>;
}

async function loadSecrets(dataDir: string, password: string | undefined): Promise<{ secrets: DemoSecrets; generated: boolean }> {
  const file = join(dataDir, 'demo-secrets.json');
  const kept = await readDemoSecrets(dataDir);
  const generated = !password && !kept.password;
  const secrets: DemoSecrets = {
    password: password ?? kept.password ?? secret(),
    gatewayPassword: kept.gatewayPassword ?? secret(),
    ingestPassword: kept.ingestPassword ?? secret(),
    devicePasswords: kept.devicePasswords ?? { 'gate-1': secret(), 'kiosk-1': secret(), 'button-1': secret() },
    deliverySecret: kept.deliverySecret ?? secret(),
    cameraPassword: kept.cameraPassword ?? secret(),
    idHashKey: kept.idHashKey ?? randomBytes(32).toString('base64url'),
  };
  // A password given in XIAOAN_DEMO_PASSWORD stays in the environment; only generated ones are kept.
  const toKeep = { ...secrets, password: password ? kept.password : secrets.password };
  await writeFile(file, seal(loadSecretKey(join(dataDir, 'edge')), JSON.stringify(toKeep)) + '\n', { mode: 0o600 });
  return { secrets, generated };
}

export async function startDemo(opts: DemoOptions): Promise<Demo> {
  const log = opts.log ?? createLogger();
  const dataDir = resolve(opts.dataDir);
  await mkdir(join(dataDir, 'edge'), { recursive: true });
  const { secrets, generated } = await loadSecrets(dataDir, opts.password);
  const stack: Array<() => Promise<unknown>> = [];
  const stopAll = async () => {
    for (const stop of stack.reverse()) await stop().catch((e) => log.warn('stop failed', { error: e }));
  };

  try {
    // Central tier: store, broker, provincial modules' stand-in, alerting, ingest worker.
    const store = await openStore(opts.databaseUrl ?? `pglite:${join(dataDir, 'pg')}`, { log });
    stack.push(() => store.close());
    await store.seedOrgTree({ demo: true });
    for (const users of DEMO_USERS) {
      await seedUser(store.db, { username: users.username, password: secrets.password, role: users.role, orgPath: users.orgPath, displayName: users.displayName });
    }
    await store.registerGateway({ id: DEMO.gatewayId, county: DEMO.county, orgPath: DEMO.school.orgPath, name: DEMO.school.zh, password: secrets.gatewayPassword });

    const broker = await startCentralBroker({ port: 0, host: '127.0.0.1', store, serviceAccounts: [{ username: 'ingest', password: secrets.ingestPassword, clientIdPrefixes: ['xiaoan-demo-ingest-'] }], log });
    stack.push(() => broker.close());

    const receiver = await startReferenceReceiver({ port: 0, host: '127.0.0.1', secret: secrets.deliverySecret, dir: join(dataDir, 'province-modules') });
    stack.push(() => receiver.close());

    // Alerting sends linkage commands through the worker, which needs alerting as its listener:
    // a forwarding sender breaks the cycle.
    let worker: IngestWorker | undefined;
    const commands: CommandSender = {
      send: (gatewayId, command, timeoutMs) => {
        if (!worker) return Promise.reject(new Error('ingest worker not started yet'));
        return worker.commands.send(gatewayId, command, timeoutMs);
      },
    };
    const ruleSet = await loadLibrary();
    // The camera feed starts with the simulated school below; linkage asks for it only when an alarm fires.
    let snapshotSource: string | null = null;
    const alerting = await createAlerting({
      db: store.db,
      rules: ruleSet,
      clock: systemClock,
      log,
      commands,
      linkage: { snapshot: async (cam) => (cam.deviceId === 'cam-1' ? grabStill(snapshotSource) : null) },
      delivery: { hazardUrl: `${receiver.url}/hazard/alerts`, emergencyUrl: `${receiver.url}/emergency/alerts`, secret: secrets.deliverySecret },
    });
    stack.push(() => alerting.stop());

    const ingestWorker = await createIngestWorker({
      store, brokerUrl: broker.url, username: 'ingest', password: secrets.ingestPassword, region: DEMO.province,
      listeners: [alerting.listener], log, clientId: 'xiaoan-demo-ingest',
    });
    worker = ingestWorker;
    await ingestWorker.start();
    stack.push(() => ingestWorker.stop());

    // The simulated school: Modbus detectors on free ports, MQTT devices on the gateway's broker.
    const smokeProfile = (await getProfile('smoke-photoelectric-generic')) as ModbusProfile;
    const tempProfile = (await getProfile('temp-humidity-generic')) as ModbusProfile;
    const smoke = await startModbusSimulator({ profile: smokeProfile, host: '127.0.0.1', initial: { smoke_density: 0.02 } });
    stack.push(() => smoke.close());
    const temp = await startModbusSimulator({ profile: tempProfile, host: '127.0.0.1', initial: { temperature: 22.5, humidity: 45 } });
    // A switch room warms and cools a little through the day, so the charts show a live trace.
    const weather = setInterval(() => {
      const t = Date.now() / 600_000;
      temp.set('temperature', Math.round((22.5 + 2.5 * Math.sin(t)) * 10) / 10);
      temp.set('humidity', Math.round(45 + 8 * Math.cos(t / 2)));
    }, 30_000);
    stack.push(async () => clearInterval(weather));
    stack.push(() => temp.close());

    const camera = await startOnvifSimulator({ host: '127.0.0.1', username: 'admin', password: secrets.cameraPassword, model: 'XA-Sim Dome' });
    stack.push(() => camera.close());
    const feed = await startTestPatternFeed({ host: '127.0.0.1' });
    stack.push(() => feed.close());
    snapshotSource = feed.url;
    const cameraUrl = camera.url; // onvif://admin:PASSWORD@127.0.0.1:PORT

    const deviceBrokerPort = await freePort();
    const edgeConfig = parseEdgeConfig({
      gatewayId: DEMO.gatewayId,
      county: DEMO.county,
      site: DEMO.school.orgPath,
      name: DEMO.school.zh,
      uplink: { url: broker.url, username: DEMO.gatewayId, password: secrets.gatewayPassword },
      dataDir: join(dataDir, 'edge'),
      deviceBroker: { port: deviceBrokerPort, host: '127.0.0.1' },
      http: { port: 0, host: '127.0.0.1' },
      idHashKey: secrets.idHashKey,
      devices: [
        { id: 'smoke-1', profile: smokeProfile.id, url: smoke.url, name: '教学楼一层烟感 Teaching block 1F smoke', building: '教学楼 Teaching block', room: '1F', intervalMs: 1000 },
        { id: 'temp-1', profile: tempProfile.id, url: temp.url, name: '配电室温湿度 Switch room temperature', building: '教学楼 Teaching block', room: 'B1', intervalMs: 5000 },
        { id: 'gate-1', profile: 'gate-controller-generic', url: 'mqtt://gate-1', name: '东门门禁 East gate', building: '东门 East gate', password: secrets.devicePasswords['gate-1'] },
        { id: 'kiosk-1', profile: 'visitor-kiosk-generic', url: 'mqtt://kiosk-1', name: '门卫室访客机 Guard room kiosk', building: '东门 East gate', password: secrets.devicePasswords['kiosk-1'] },
        { id: 'button-1', profile: 'emergency-button-generic', url: 'mqtt://button-1', name: '门卫室一键报警 Guard room emergency button', building: '东门 East gate', password: secrets.devicePasswords['button-1'] },
        { id: 'cam-1', profile: 'onvif-camera-generic', url: cameraUrl, name: '东门摄像机 East gate camera', building: '东门 East gate' },
      ],
    }, 'demo');
    const gateway = await createGateway(edgeConfig, { log });
    await gateway.start();
    stack.push(() => gateway.stop());

    const deviceBrokerUrl = `mqtt://127.0.0.1:${deviceBrokerPort}`;
    const mqttDevice = (id: string) => ({ brokerUrl: deviceBrokerUrl, deviceId: id, username: id, password: secrets.devicePasswords[id]!, heartbeatMs: 30_000 });
    const gate = await startGateSimulator(mqttDevice('gate-1'));
    stack.push(() => gate.close());
    const kiosk = await startKioskSimulator(mqttDevice('kiosk-1'));
    stack.push(() => kiosk.close());
    const button = await startButtonSimulator(mqttDevice('button-1'));
    stack.push(() => button.close());

    const server = await createDashboardServer({
      store, alerting, port: opts.port, host: opts.host ?? '127.0.0.1', log, commands,
      extras: {
        profiles: (await loadProfiles()).map((p) => ({ id: p.id, protocol: p.protocol, description: p.description, category: p.category })),
        rules: await createRulesService({ db: store.db, store, alerting, lib: rulesLib, initial: ruleSet, clock: systemClock, log }),
        cameras: createCameraService({ [`${DEMO.gatewayId}/cam-1`]: feed.url }),
      },
    });
    stack.push(() => server.close());

    const platform = scopeOf(DEMO.province);
    let drillHold: NodeJS.Timeout | undefined;
    const stageDrill = async (holdMs = 20_000) => {
      // the drill stages smoke-1: its alarms are drills; any other alarm at the school stays real
      await alerting.startDrill(platform, DEMO.school.orgPath, Math.ceil((holdMs + 60_000) / 60_000), 'demo', [`${DEMO.gatewayId}/smoke-1`]);
      log.info('演练开始 drill staged: smoke rising at smoke-1', { site: DEMO.school.orgPath });
      smoke.set('smoke_density', 0.32);
      smoke.set('alarm', true);
      clearTimeout(drillHold);
      drillHold = setTimeout(() => {
        smoke.set('smoke_density', 0.02);
        smoke.set('alarm', false);
        log.info('演练结束 drill over: smoke back to normal');
      }, holdMs);
    };
    const firstDrill = setTimeout(() => void stageDrill().catch((e) => log.error('drill failed', { error: e })), opts.drillAfterMs ?? 20_000);
    const every = opts.drillEveryMs ?? 15 * 60_000;
    const repeat = every > 0 ? setInterval(() => void stageDrill().catch((e) => log.error('drill failed', { error: e })), every) : undefined;
    stack.push(async () => {
      clearTimeout(firstDrill);
      clearTimeout(drillHold);
      if (repeat) clearInterval(repeat);
    });

    return {
      url: server.url,
      password: secrets.password,
      passwordGenerated: generated,
      store, broker, gateway, worker: ingestWorker, alerting, receiver, server,
      sims: { smoke, temp, camera, gate, kiosk, button },
      stageDrill,
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
