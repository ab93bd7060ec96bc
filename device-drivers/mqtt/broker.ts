// The gateway's own device broker (aedes): gates, kiosks and call buttons log in with credentials
// of their own and may publish only under `devices/{theirId}/…` and subscribe only to their own
// command topic. Client ids or usernames with `+` or `#` are refused; `$SYS` stays protected.
// A device connects only with its own client id (its device id, or `{deviceId}-{suffix}`;
// contract/mqtt-identity.ts), so one device's password cannot kick another off; other ids are
// refused at CONNECT with return code 2. Packets are size-limited at the socket before they are
// buffered (contract/mqtt-limits.ts).
//
// No acknowledgement before custody (docs/delivery.md, step 1): aedes sends PUBACK (QoS 1) before
// it hands a message to in-process subscribers, so drivers do not subscribe through aedes. A
// device's publish is handed to its driver's listeners synchronously inside authorizePublish
// (driver → gateway → buffer append is synchronous). In custody mode (the gateway) it is
// authorized only if a listener exists and the gateway kept it (its custody-failure counter did
// not move). Refused, aedes sends no PUBACK / PUBREC and closes the connection; the device's
// client sends it again on reconnect.
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import type { Logger } from '../../contract/index.ts';
import { ID_PATTERN } from '../../contract/index.ts';
import { clientIdRefusal } from '../../contract/mqtt-identity.ts';
import { guardSocket, type PacketLimits, type PacketSizeGuard } from '../../contract/mqtt-limits.ts';
import type { DeviceBrokerHandle } from '../types.ts';

/** A device's message larger than this is refused (and the connection closed). */
export const MAX_DEVICE_PAYLOAD = 64 * 1024;

/** Defaults of the device broker's limits (docs/security.md, "Packet limits"). */
export const DEVICE_BROKER_LIMITS = {
  beforeAuthBytes: 8 * 1024,
  /** a publish of MAX_DEVICE_PAYLOAD with its topic */
  afterAuthBytes: MAX_DEVICE_PAYLOAD + 1024,
  /** packets a device may send after CONNECT before its login is accepted (aedes queueLimit; more closes it) */
  packetsBeforeAuth: 42,
  /** QoS 2 publishes held open per device (aedes maxInflightInbound; more closes the connection) */
  inflightPerClient: 256,
} as const;

export interface DeviceBrokerOptions {
  port?: number;
  host?: string;
  /** returns the device id these credentials belong to, or null */
  authenticate(username: string, password: string): string | null | Promise<string | null>;
  log: Logger;
  /** false: create the broker (and its handle, for drivers) but accept connections only after listen() */
  listen?: boolean;
  /**
   * Custody mode (the gateway): a counter of failures to take custody (its buffer write errors).
   * A message during which it moves, or for a device with no listener, is refused. Without it
   * (standalone use, driver tests) a message nobody listens to is acknowledged and dropped.
   */
  custodyFailures?(): number;
  /**
   * A listener threw on a message (a payload the driver cannot read): return true once it is set
   * aside durably (quarantined), and the message is acknowledged; false refuses it.
   */
  onUnreadable?(deviceId: string, topic: string, reason: string, bytes: number): boolean;
  /** ids of every device this broker serves (the gateway's registry); drivers' listeners are always counted */
  knownDevices?(): Iterable<string>;
  /** packet size limits (default DEVICE_BROKER_LIMITS) */
  limits?: Partial<PacketLimits>;
}

export interface DeviceBroker {
  /** 0 until listening */
  readonly port: number;
  readonly url: string;
  /** start accepting connections (no-op when already listening) */
  listen(): Promise<void>;
  handle: DeviceBrokerHandle;
  /** device ids with an open connection */
  connectedDevices(): string[];
  close(): Promise<void>;
}

const DEVICE = Symbol('xiaoan.deviceId');
const BAD_ID = Symbol('xiaoan.badClientId');
const REQUESTED_ID = Symbol('xiaoan.requestedClientId');
type Tagged = { [DEVICE]?: string; [BAD_ID]?: string; [REQUESTED_ID]?: string; id: string; conn: object };

const authError = (returnCode: 2 | 4 | 5, message: string) => Object.assign(new Error(message), { returnCode });

export async function startDeviceBroker(opts: DeviceBrokerOptions): Promise<DeviceBroker> {
  const log = opts.log.child('device-broker');
  const host = opts.host ?? '127.0.0.1';
  const connected = new Map<string, number>();
  /** device id → its drivers' listeners (messages reach them only through authorizePublish) */
  const listeners = new Map<string, Set<(topic: string, payload: Buffer) => void>>();
  const limits: PacketLimits = {
    beforeAuthBytes: opts.limits?.beforeAuthBytes ?? DEVICE_BROKER_LIMITS.beforeAuthBytes,
    afterAuthBytes: opts.limits?.afterAuthBytes ?? DEVICE_BROKER_LIMITS.afterAuthBytes,
  };
  const guards = new WeakMap<object, PacketSizeGuard>();
  const otherDevices = () => new Set([...(opts.knownDevices?.() ?? []), ...listeners.keys(), ...connected.keys()]);

  /** Hand a device's message to its listeners now; null when custody was taken, else why not. */
  function deliver(deviceId: string, topic: string, payload: Buffer): string | null {
    const fns = listeners.get(deviceId);
    if (!fns?.size) {
      // custody mode (the gateway passes custodyFailures): nobody can keep it, so no acknowledgement
      if (opts.custodyFailures) return `no driver is ready for device ${deviceId}`;
      log.debug('device message with no listener; acknowledged and dropped (broker not in custody mode)', { device: deviceId, topic });
      return null;
    }
    const before = opts.custodyFailures?.() ?? 0;
    for (const fn of [...fns]) {
      try {
        fn(topic, payload);
      } catch (e) {
        const reason = String((e as Error)?.message ?? e).slice(0, 300);
        if (!opts.onUnreadable) {
          log.warn('device message not readable; acknowledged and dropped', { device: deviceId, topic, reason });
          continue;
        }
        if (!opts.onUnreadable(deviceId, topic, reason, payload.length)) return 'an unreadable message could not be set aside';
      }
    }
    if ((opts.custodyFailures?.() ?? 0) !== before) return 'the gateway could not buffer the message';
    return null;
  }

  const broker = await Aedes.createBroker({
    queueLimit: DEVICE_BROKER_LIMITS.packetsBeforeAuth,
    maxInflightInbound: DEVICE_BROKER_LIMITS.inflightPerClient,
    preConnect(client, packet, cb) {
      const t = client as unknown as Tagged;
      const id = packet.clientId ?? '';
      t[REQUESTED_ID] = id;
      // MQTT 3.1.1 §4.7.1: + and # are wildcards; a client id carrying them would confuse every ACL built on ids
      if (/[+#]/.test(id)) t[BAD_ID] = 'client id contains + or #';
      // [MQTT-3.1.3-7]/[MQTT-3.1.3-8]: an empty client id is only valid with a clean session
      else if (id === '' && packet.clean === false) t[BAD_ID] = 'empty client id needs clean session';
      cb(null, true);
    },
    authenticate(client, username, password, done) {
      const t = client as unknown as Tagged;
      if (t[BAD_ID]) {
        log.warn('connection refused', { reason: t[BAD_ID] });
        return done(authError(2, 'identifier rejected'), null);
      }
      const user = username ?? '';
      if (!user || /[+#/]/.test(user)) return done(authError(4, 'bad user name or password'), null);
      Promise.resolve()
        .then(() => opts.authenticate(user, password ? password.toString('utf8') : ''))
        .then(
          (deviceId) => {
            if (!deviceId || !ID_PATTERN.test(deviceId)) {
              log.warn('device login refused', { username: user });
              return done(authError(4, 'bad user name or password'), null);
            }
            const refused = clientIdRefusal({ kind: 'device', id: deviceId, otherDevices: otherDevices() }, t[REQUESTED_ID] ?? '');
            if (refused) {
              log.warn('client id refused: not this device\'s own (客户端标识与设备身份不符)', { device: deviceId, client: t[REQUESTED_ID], reason: refused });
              return done(authError(2, 'identifier rejected'), null);
            }
            t[DEVICE] = deviceId;
            guards.get(t.conn)?.accept();
            done(null, true);
          },
          (e) => {
            log.error('device authentication failed', { error: e });
            done(authError(5, 'not authorized'), null);
          },
        );
    },
    authorizePublish(client, packet, cb) {
      if (!client) return cb(null); // the gateway's own publishes (commands to devices)
      const id = (client as unknown as Tagged)[DEVICE];
      const topic = packet.topic;
      if (topic.startsWith('$')) return cb(new Error('$SYS and $ topics are reserved for the broker'));
      if (!id || !topic.startsWith(`devices/${id}/`) || topic.startsWith(`devices/${id}/cmd`))
        return cb(new Error(`device ${id} may publish only under devices/${id}/`));
      if (packet.payload && packet.payload.length > MAX_DEVICE_PAYLOAD) return cb(new Error('payload too large'));
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload ?? '');
      const take = () => {
        const refused = deliver(id, topic, payload);
        if (refused) {
          log.warn('device message not acknowledged; the device will send it again', { device: id, topic, reason: refused });
          return cb(new Error(refused));
        }
        cb(null);
      };
      // [MQTT-4.3.3-2] a QoS 2 PUBLISH sent again (DUP) whose first copy we hold is not taken twice
      if (packet.qos === 2 && packet.dup) {
        (broker as unknown as { persistence: { incomingGetPacket(c: unknown, p: unknown): Promise<unknown> } }).persistence.incomingGetPacket(client, packet).then(() => cb(null), take);
        return;
      }
      take();
    },
    authorizeSubscribe(client, sub, cb) {
      const id = (client as unknown as Tagged)[DEVICE];
      const mine = `devices/${id}/cmd`;
      // SUBACK 0x80 (refused) for anything but the device's own command topic
      if (!id || (sub.topic !== mine && sub.topic !== `${mine}/#` && !sub.topic.startsWith(`${mine}/`)) || /[+]/.test(sub.topic)) return cb(null, null);
      cb(null, sub);
    },
  });

  broker.on('clientReady', (c) => {
    const id = (c as unknown as Tagged)[DEVICE];
    if (id) connected.set(id, (connected.get(id) ?? 0) + 1);
  });
  broker.on('clientDisconnect', (c) => {
    const id = (c as unknown as Tagged)[DEVICE];
    if (id && connected.has(id)) {
      const n = connected.get(id)! - 1;
      if (n <= 0) connected.delete(id);
      else connected.set(id, n);
    }
  });
  broker.on('clientError', (_c, e) => log.debug('client error', { error: e.message }));
  broker.on('connectionError', (_c, e) => log.debug('connection error', { error: e.message }));

  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    broker.handle(s);
    // after handle(): aedes' 'readable' listener keeps the socket paused, the guard sees what aedes reads
    guards.set(s, guardSocket(s, limits, log));
  });
  let port = 0;
  let listening: Promise<void> | null = null;
  const listen = () =>
    (listening ??= new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, host, () => {
        port = (server.address() as { port: number }).port;
        resolve();
      });
    }));
  if (opts.listen !== false) await listen();

  const handle: DeviceBrokerHandle = {
    onDeviceMessage(deviceId, fn) {
      let fns = listeners.get(deviceId);
      if (!fns) listeners.set(deviceId, (fns = new Set()));
      fns.add(fn);
      return () => {
        fns.delete(fn);
        if (fns.size === 0 && listeners.get(deviceId) === fns) listeners.delete(deviceId);
      };
    },
    publishToDevice(deviceId, subtopic, payload) {
      return new Promise((resolve, reject) =>
        broker.publish(
          { cmd: 'publish', topic: `devices/${deviceId}/${subtopic}`, payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload), qos: 1, retain: false, dup: false } as never,
          (e?: Error | null) => (e ? reject(e) : resolve()),
        ),
      );
    },
  };

  return {
    get port() {
      return port;
    },
    get url() {
      return `mqtt://${host}:${port}`;
    },
    listen,
    handle,
    connectedDevices: () => [...connected.keys()],
    async close() {
      for (const s of sockets) s.destroy();
      if (listening) await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => broker.close(() => r()));
    },
  };
}
