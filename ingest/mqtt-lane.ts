// One MQTT connection of an ingest worker ("lane"), whose QoS 1 acknowledgements are sent only
// when the worker says the message's data is committed.
//
// MQTT.js answers a QoS 1 PUBLISH with PUBACK as soon as its handler returns, and handles the next
// incoming packet only after that PUBACK is written — so acknowledging after a database commit with
// `customHandleAcks` would let one message at a time through. Here the PUBACK write is held back
// instead: MQTT.js carries on reading (so many messages gather into one commit), and the held
// PUBACKs are written in the order their PUBLISHes arrived [MQTT-4.6.0-2] once each is settled. The
// broker's in-flight window (MQTT 5 Receive Maximum) and our own high-water mark (which stops
// reading the socket) bound what is held in memory. Held PUBACKs of a connection that dropped are
// discarded: the broker redelivers those messages, and storage is idempotent on (gateway, seq).

import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from '../contract/index.ts';

export interface InboundMessage {
  topic: string;
  payload: Buffer;
  retain: boolean;
  /** settle once the message's data is committed (or dead-lettered): its PUBACK may then go */
  settle(): void;
  lane: Lane;
}

export type LaneState = 'connecting' | 'connected' | 'disconnected' | 'closed';

interface Held {
  gen: number;
  messageId: number;
  settled: boolean;
  send?: () => void;
}

export interface LaneOptions {
  name: string;
  url: string;
  clientId: string;
  username: string;
  password: string;
  protocolVersion: 4 | 5;
  clean: boolean;
  /** MQTT 5 Session Expiry Interval when not clean (seconds) */
  sessionExpirySeconds?: number;
  /** MQTT 5 Receive Maximum: how many unacknowledged messages the broker may send us */
  receiveMaximum: number;
  subscriptions: () => string[];
  onMessage: (m: InboundMessage) => void;
  /** whether to stop reading the socket (backpressure) */
  saturated: () => boolean;
  log: Logger;
  reconnectPeriodMs?: number;
  /** mqtts:// options: PEM contents */
  tls?: { ca?: Buffer | string; cert?: Buffer | string; key?: Buffer | string; rejectUnauthorized?: boolean };
}

export class Lane {
  state: LaneState = 'connecting';
  client!: MqttClient;
  private gen = 0;
  private held: Held[] = [];
  private stalled: Array<() => void> = [];
  lastError: string | null = null;
  connects = 0;

  private constructor(readonly opts: LaneOptions) {}

  /** Connect; resolves on the first CONNACK, rejects with the broker's reason if it refuses. */
  static async open(opts: LaneOptions): Promise<Lane> {
    const lane = new Lane(opts);
    await lane.connect();
    return lane;
  }

  private connect(): Promise<void> {
    const o = this.opts;
    const options: IClientOptions = {
      clientId: o.clientId,
      username: o.username,
      password: o.password,
      protocolVersion: o.protocolVersion,
      clean: o.clean,
      reconnectPeriod: o.reconnectPeriodMs ?? 1000,
      connectTimeout: 10_000,
      resubscribe: false,
      keepalive: 60,
      ...(o.tls ?? {}),
      ...(o.protocolVersion === 5
        ? { properties: { receiveMaximum: o.receiveMaximum, sessionExpiryInterval: o.clean ? 0 : (o.sessionExpirySeconds ?? 3600) } }
        : {}),
    };
    const client = mqtt.connect(o.url, options);
    this.client = client;
    this.hookAcks(client);

    client.on('connect', () => {
      this.gen++;
      this.connects++;
      this.state = 'connected';
      this.lastError = null;
      const subs = o.subscriptions();
      if (subs.length > 0) {
        client.subscribe(subs, { qos: 1 }, (err, granted) => {
          if (err) {
            o.log.error('subscribe failed', { error: err.message, subs });
            return;
          }
          const refused = (granted ?? []).filter((g) => g.qos === 128 || (g.qos as number) > 2);
          if (refused.length) o.log.error('broker refused subscription (订阅被拒绝)', { topics: refused.map((g) => g.topic) });
        });
      }
      o.log.info('connected', { url: o.url, clientId: o.clientId, protocolVersion: o.protocolVersion });
    });
    client.on('close', () => {
      if (this.state === 'closed') return;
      if (this.state === 'connected') o.log.warn('connection lost; reconnecting (连接断开，正在重连)');
      this.state = 'disconnected';
      this.dropHeld();
    });
    client.on('error', (e) => {
      this.lastError = e.message;
      o.log.warn('mqtt error', { error: e.message, code: (e as { code?: unknown }).code });
    });
    client.on('message', (topic, payload, packet) => {
      const messageId = packet.qos > 0 ? packet.messageId : undefined;
      let h: Held | undefined;
      if (messageId !== undefined) {
        h = { gen: this.gen, messageId, settled: false };
        this.held.push(h);
      }
      const held = h;
      let settled = false;
      o.onMessage({
        topic,
        payload,
        retain: packet.retain,
        lane: this,
        settle: () => {
          if (settled) return;
          settled = true;
          if (held) {
            held.settled = true;
            this.release();
          }
        },
      });
    });

    return new Promise<void>((resolve, reject) => {
      const ok = () => {
        client.off('error', fail);
        resolve();
      };
      const fail = (e: Error) => {
        client.off('connect', ok);
        const code = (e as { code?: number }).code;
        // refused by the broker (bad protocol version, bad credentials, not authorised): no retry helps
        if (typeof code === 'number' && code > 0) {
          this.state = 'closed';
          client.end(true);
          reject(Object.assign(new Error(`${o.name}: broker refused the connection: ${e.message}`), { code, retryable: false }));
        }
      };
      client.once('connect', ok);
      client.on('error', fail);
      client.once('connect', () => client.off('error', fail));
    });
  }

  // Intercept the PUBACK that MQTT.js writes after the message handler: hold it until settled.
  private hookAcks(client: MqttClient): void {
    const c = client as unknown as {
      _sendPacket: (packet: { cmd: string; messageId?: number }, cb?: (e?: Error) => void, ...rest: unknown[]) => void;
    };
    const original = c._sendPacket.bind(client);
    c._sendPacket = (packet, cb, ...rest) => {
      if (packet.cmd !== 'puback' || packet.messageId === undefined) return original(packet, cb, ...rest);
      const h = this.held.find((x) => x.gen === this.gen && x.messageId === packet.messageId && !x.send);
      if (!h) return original(packet, cb, ...rest);
      h.send = () => original(packet, undefined, ...rest);
      this.release();
      // Let MQTT.js read on, unless we hold too much already: then the socket waits (TCP backpressure).
      if (cb) {
        if (this.opts.saturated()) this.stalled.push(() => cb());
        else cb();
      }
    };
  }

  /** Write the PUBACKs at the head of the queue that are settled, in arrival order. */
  private release(): void {
    while (this.held.length > 0) {
      const h = this.held[0]!;
      if (h.gen !== this.gen) {
        this.held.shift();
        continue;
      }
      if (!h.settled || !h.send) break;
      this.held.shift();
      h.send();
    }
  }

  /** Called when the worker's backlog shrinks: let MQTT.js read again. */
  resume(): void {
    while (this.stalled.length > 0 && !this.opts.saturated()) this.stalled.shift()!();
  }

  private dropHeld(): void {
    this.gen++;
    this.held = [];
    // the old connection's reader is gone; its callbacks only need to be released
    const s = this.stalled;
    this.stalled = [];
    for (const f of s) f();
  }

  heldCount(): number {
    return this.held.length;
  }

  publish(topic: string, payload: string, qos: 0 | 1 = 1): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.publish(topic, payload, { qos }, (err) => (err ? reject(err) : resolve())),
    );
  }

  /**
   * Disconnect. A graceful close ends the broker session too (MQTT 5: Session Expiry 0 in
   * DISCONNECT), so a shared subscription stops queueing this worker's share and the other
   * workers of the group take it over at once.
   */
  async close(): Promise<void> {
    const wasConnected = this.state === 'connected';
    this.state = 'closed';
    this.dropHeld();
    if (wasConnected && this.opts.protocolVersion === 5) {
      await Promise.race([
        this.client.endAsync(false, { reasonCode: 0, properties: { sessionExpiryInterval: 0 } }).catch(() => {}),
        new Promise((r) => setTimeout(r, 2000)),
      ]);
    }
    await this.client.endAsync(true).catch(() => {});
  }
}
