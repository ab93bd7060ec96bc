// The embedded central broker (aedes, MQTT 3.1.1) for the demo and small sites. In production the
// broker is Mosquitto or an EMQX cluster with the same rules in its ACL:
//   - a gateway logs in with username = its id and its password (checked against `gateways`);
//   - it publishes only under its own topics (readings, events, status, cmd-result) and
//     subscribes only to its own cmd/#;
//   - ingest workers log in with service accounts and may read everything below xiaoan/v1/ and
//     publish commands;
//   - nobody publishes to $SYS, and client ids / usernames with MQTT wildcards are refused;
//   - a client id is bound to the login (contract/mqtt-identity.ts): a gateway connects only as
//     its own id, a service account only with ids under its prefixes (`svc-ingest` →
//     `xiaoan-ingest-…`); any other id is refused at CONNECT with return code 2;
//   - packets are size-limited at the socket before they are buffered (contract/mqtt-limits.ts).

import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import {
  buildTopic,
  silentLogger,
  systemClock,
  type Clock,
  type Logger,
} from '../contract/index.ts';
import { clientIdRefusal, collidesWithService, defaultServicePrefix, longerOwners } from '../contract/mqtt-identity.ts';
import { guardSocket, type PacketLimits, type PacketSizeGuard } from '../contract/mqtt-limits.ts';
import type { Store } from './store.ts';
import { verifySecret } from './secrets.ts';

export interface ServiceAccount {
  username: string;
  /** clear password, or a `scrypt$…` hash (hashSecret) */
  password: string;
  /** client id prefixes this account may use; default `xiaoan-{username without svc-}-` */
  clientIdPrefixes?: string[];
}

/** Defaults of the central broker's limits (docs/security.md, "Packet limits"). */
export const CENTRAL_LIMITS = {
  /** a CONNECT with credentials and a gateway's will fits in far less */
  beforeAuthBytes: 16 * 1024,
  /** an uplink batch of MAX_BATCH records stays under ~1 MB; twice that as headroom */
  afterAuthBytes: 2 * 1024 * 1024,
  /** packets a client may send after CONNECT before its login is accepted (aedes queueLimit; more closes it) */
  packetsBeforeAuth: 42,
  /** QoS 2 publishes held open per client (aedes maxInflightInbound; more closes the connection) */
  inflightPerClient: 1000,
} as const;

export interface CentralBrokerOptions {
  port?: number;
  host?: string;
  store: Store;
  serviceAccounts: ServiceAccount[];
  log?: Logger;
  clock?: Clock;
  /** packet size limits (default CENTRAL_LIMITS) */
  limits?: Partial<PacketLimits>;
}

export interface CentralBroker {
  port: number;
  url: string;
  /** connected clients by kind, for health pages */
  stats(): { gateways: number; services: number };
  close(): Promise<void>;
}

type Principal =
  | { kind: 'gateway'; id: string; county: string; base: string; takes?: string }
  | { kind: 'service'; username: string };

const PRINCIPAL = Symbol('xiaoan.principal');
const REQUESTED_ID = Symbol('xiaoan.requestedClientId');
const WILDCARD = /[+#]/;

function principalOf(client: unknown): Principal | undefined {
  return client ? (client as Record<symbol, Principal | undefined>)[PRINCIPAL] : undefined;
}

function authError(returnCode: number, message: string) {
  return Object.assign(new Error(message), { returnCode });
}

export async function startCentralBroker(opts: CentralBrokerOptions): Promise<CentralBroker> {
  const log = (opts.log ?? silentLogger).child('central-broker');
  const clock = opts.clock ?? systemClock;
  const host = opts.host ?? '127.0.0.1';
  const services = new Map(opts.serviceAccounts.map((s) => [s.username, s]));
  const prefixesOf = (s: ServiceAccount) => s.clientIdPrefixes ?? [defaultServicePrefix(s.username)];
  const servicePrefixes = opts.serviceAccounts.flatMap(prefixesOf);
  const limits: PacketLimits = {
    beforeAuthBytes: opts.limits?.beforeAuthBytes ?? CENTRAL_LIMITS.beforeAuthBytes,
    afterAuthBytes: opts.limits?.afterAuthBytes ?? CENTRAL_LIMITS.afterAuthBytes,
  };
  const guards = new WeakMap<object, PacketSizeGuard>();
  let gateways = 0;
  let servicesConnected = 0;

  const broker = await Aedes.createBroker({
    // [MQTT-3.1.3-8] an empty client id with clean session off is refused (identifier rejected)
    queueLimit: CENTRAL_LIMITS.packetsBeforeAuth,
    maxInflightInbound: CENTRAL_LIMITS.inflightPerClient,
    preConnect(client, packet, done) {
      if (!packet.clientId && !packet.clean) return done(authError(2, 'empty client id needs clean session'), false);
      (client as unknown as Record<symbol, string>)[REQUESTED_ID] = packet.clientId ?? '';
      done(null, true);
    },
    authenticate(client, username, password, done) {
      const user = username ?? '';
      const pass = password ? password.toString('utf8') : '';
      if (WILDCARD.test(client.id ?? '') || WILDCARD.test(user)) {
        return done(authError(2, 'client id or username contains + or #'), false);
      }
      const requested = (client as unknown as Record<symbol, string | undefined>)[REQUESTED_ID] ?? client.id ?? '';
      const svc = services.get(user);
      const check = async (): Promise<Principal | null> => {
        if (svc !== undefined) {
          const ok = svc.password.startsWith('scrypt$') ? await verifySecret(pass, svc.password) : svc.password.length > 0 && svc.password === pass;
          return ok ? { kind: 'service', username: user } : null;
        }
        const gw = await opts.store.verifyGateway(user, pass);
        if (!gw) return null;
        // `{gatewayId}-{suffix}` must not be (or lie under) another registered gateway's id
        for (const other of longerOwners(gw.id, requested)) {
          if (await opts.store.getGateway(other)) return { kind: 'gateway', id: gw.id, county: gw.county, base: '', takes: other };
        }
        const base = buildTopic({ county: gw.county, gatewayId: gw.id, channel: 'status' }).replace(/\/status$/, '/');
        return { kind: 'gateway', id: gw.id, county: gw.county, base };
      };
      check().then(
        (p) => {
          if (!p) {
            log.warn('login refused (登录被拒绝)', { username: user, client: client.id });
            return done(authError(4, 'bad username or password'), false);
          }
          const refused =
            p.kind === 'service'
              ? clientIdRefusal({ kind: 'service', username: p.username, prefixes: prefixesOf(svc!) }, requested)
              : p.takes
                ? `client id ${requested} belongs to gateway ${p.takes}`
                : collidesWithService(requested, servicePrefixes)
                  ? `client id ${requested} lies under a service account's prefix; register the gateway under another id`
                  : clientIdRefusal({ kind: 'gateway', id: p.id }, requested);
          if (refused) {
            log.warn('client id refused: not this login\'s own (客户端标识与登录身份不符)', { username: user, client: requested, reason: refused });
            return done(authError(2, 'identifier rejected'), false);
          }
          (client as unknown as Record<symbol, Principal>)[PRINCIPAL] = p;
          guards.get(client.conn)?.accept();
          done(null, true);
        },
        (e) => {
          log.error('login check failed; try again when the database is back', { username: user, error: e });
          done(authError(3, 'server unavailable'), false);
        },
      );
    },
    authorizePublish(client, packet, done) {
      const topic = packet.topic;
      // [MQTT-4.7.2-1] topics starting with $ are the broker's own
      if (topic.startsWith('$')) return done(new Error('$ topics are reserved'));
      const p = principalOf(client);
      if (!p) return done(new Error('not logged in'));
      if (packet.payload && packet.payload.length > limits.afterAuthBytes) return done(new Error('payload too large'));
      if (p.kind === 'service') {
        return topic.startsWith('xiaoan/v1/') ? done(null) : done(new Error('service accounts publish under xiaoan/v1/ only'));
      }
      const rest = topic.startsWith(p.base) ? topic.slice(p.base.length) : null;
      if (rest === null || !['readings', 'events', 'status', 'cmd-result'].includes(rest)) {
        log.warn('publish refused: not this gateway\'s topic (非本网关主题)', { gateway: p.id, topic });
        return done(new Error('not this gateway\'s topic'));
      }
      // A last will carries the time the gateway connected; stamp it with the time it fired,
      // so it is newer than the gateway's birth.
      if (rest === 'status' && client && packet === (client as unknown as { will?: unknown }).will) {
        try {
          const body = JSON.parse(packet.payload.toString());
          if (body && typeof body === 'object' && body.state === 'offline') {
            body.ts = clock.now();
            packet.payload = Buffer.from(JSON.stringify(body));
          }
        } catch {
          // not JSON: ingest dead-letters it
        }
      }
      done(null);
    },
    authorizeSubscribe(client, sub, done) {
      const p = principalOf(client);
      if (!p) return done(null, null);
      if (p.kind === 'service') {
        return sub.topic.startsWith('xiaoan/v1/') || sub.topic === 'xiaoan/#' ? done(null, sub) : done(null, null);
      }
      // A gateway subscribes to its own commands and receipts only (SUBACK 0x80 otherwise).
      const own = p.base + 'cmd/';
      if (sub.topic === own + '#' || (sub.topic.startsWith(own) && !WILDCARD.test(sub.topic))) return done(null, sub);
      if (sub.topic === p.base + 'receipt') return done(null, sub);
      log.warn('subscription refused (订阅被拒绝)', { gateway: p.id, topic: sub.topic });
      done(null, null);
    },
    authorizeForward(client, packet) {
      // Retained messages are forwarded on subscribe too: a gateway never sees another's traffic.
      const p = principalOf(client);
      if (p?.kind === 'gateway' && !packet.topic.startsWith(p.base + 'cmd/') && packet.topic !== p.base + 'receipt') return null;
      return packet;
    },
  });

  broker.on('clientReady', (client) => {
    const p = principalOf(client);
    if (p?.kind === 'gateway') gateways++;
    else if (p?.kind === 'service') servicesConnected++;
  });
  broker.on('clientDisconnect', (client) => {
    const p = principalOf(client);
    if (p?.kind === 'gateway') gateways--;
    else if (p?.kind === 'service') servicesConnected--;
  });
  broker.on('clientError', (client, err) => log.debug('client error', { client: client.id, error: err.message }));

  const server: Server = createServer((socket: Socket) => {
    broker.handle(socket);
    // after handle(): aedes' 'readable' listener keeps the socket paused, the guard sees what aedes reads
    guards.set(socket, guardSocket(socket, limits, log));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : (opts.port ?? 0);
  const url = `mqtt://${host}:${port}`;
  log.info('central broker listening', { url });

  return {
    port,
    url,
    stats: () => ({ gateways, services: servicesConnected }),
    async close() {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
