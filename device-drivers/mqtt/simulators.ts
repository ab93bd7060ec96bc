// MQTT device simulators for the demo and tests: a gate controller, a visitor kiosk and a call
// button, each a real MQTT client that logs in to the gateway's device broker with its own
// credentials and publishes what its profile maps.
import mqtt, { type MqttClient } from 'mqtt';

export interface MqttDeviceSimulatorOptions {
  brokerUrl: string;
  deviceId: string;
  username: string;
  password: string;
  /** how often the device reports its state (default 10 s; 0 = never on its own) */
  heartbeatMs?: number;
  clientId?: string;
}

interface Base {
  /** publish an arbitrary payload under the device's topic (tests of hostile devices) */
  publishRaw(subtopic: string, payload: string | Buffer): Promise<void>;
  /** commands received on `devices/{id}/cmd` */
  commands: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

async function connectDevice(o: MqttDeviceSimulatorOptions, onCommand: (c: Record<string, unknown>) => void): Promise<{ client: MqttClient; publish: (sub: string, body: unknown) => Promise<void> } & Base> {
  const client = await mqtt.connectAsync(o.brokerUrl, {
    username: o.username,
    password: o.password,
    clientId: o.clientId ?? `${o.deviceId}-sim`,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
  });
  const commands: Array<Record<string, unknown>> = [];
  const cmdTopic = `devices/${o.deviceId}/cmd`;
  client.on('message', (topic, payload) => {
    if (topic !== cmdTopic) return;
    try {
      const c = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
      commands.push(c);
      onCommand(c);
    } catch {
      /* a device ignores commands it cannot parse */
    }
  });
  await client.subscribeAsync(cmdTopic, { qos: 1 });
  const publishRaw = async (sub: string, payload: string | Buffer) => {
    await client.publishAsync(`devices/${o.deviceId}/${sub}`, payload, { qos: 1 });
  };
  return {
    client,
    commands,
    publishRaw,
    publish: (sub, body) => publishRaw(sub, JSON.stringify(body)),
    // flush what is in flight, but never hang on a connection that is already gone
    close: () => Promise.race([client.endAsync(), new Promise<void>((r) => setTimeout(r, 1000).unref())]).then(() => client.endAsync(true)),
  };
}

function heartbeat(ms: number | undefined, fn: () => void): () => void {
  const every = ms ?? 10_000;
  if (!every) return () => {};
  const h = setInterval(fn, every);
  h.unref();
  return () => clearInterval(h);
}

export interface GateSimulator extends Base {
  forcedOpen(): Promise<void>;
  heldOpen(seconds?: number): Promise<void>;
  passage(direction?: 'in' | 'out'): Promise<void>;
  setDoor(open: boolean): Promise<void>;
  state(): { door: 'open' | 'closed'; locked: boolean };
}

/** An access gate controller: door state, forced open, held open, passages; obeys unlock/release. */
export async function startGateSimulator(o: MqttDeviceSimulatorOptions & { door?: string }): Promise<GateSimulator> {
  const door = o.door ?? 'main';
  const st = { door: 'closed' as 'open' | 'closed', locked: true };
  const relock = new Set<NodeJS.Timeout>();
  const dev = await connectDevice(o, (c) => {
    if (c.action === 'unlock' || c.action === 'release') {
      st.locked = false;
      st.door = 'open';
      void sendState();
      const secs = c.action === 'unlock' ? Math.min(Math.max(Number(c.seconds) || 5, 1), 300) : 0;
      // a fire release keeps the gate open until someone resets it (GB 50116: never lock on evacuation)
      if (secs) {
        const h = setTimeout(() => {
          relock.delete(h);
          st.locked = true;
          st.door = 'closed';
          void sendState();
        }, secs * 1000);
        relock.add(h);
      }
    }
  });
  const sendState = () => dev.publish('state', { door: st.door, locked: st.locked, ts: Date.now() }).catch(() => {});
  await sendState();
  const stop = heartbeat(o.heartbeatMs, () => void sendState());
  return {
    commands: dev.commands,
    publishRaw: dev.publishRaw,
    state: () => ({ ...st }),
    async forcedOpen() {
      st.door = 'open';
      await dev.publish('event', { type: 'forced_open', door, ts: Date.now() });
      await sendState();
    },
    async heldOpen(seconds = 120) {
      st.door = 'open';
      await dev.publish('event', { type: 'held_open', door, seconds, ts: Date.now() });
    },
    async passage(direction = 'in') {
      await dev.publish('event', { type: 'passage', door, direction, card: 'sim-card', ts: Date.now() });
    },
    async setDoor(open) {
      st.door = open ? 'open' : 'closed';
      await sendState();
    },
    async close() {
      stop();
      for (const h of relock) clearTimeout(h);
      await dev.close();
    },
  };
}

export interface Visitor {
  name: string;
  idNumber: string;
  host?: string;
  purpose?: string;
}

export interface KioskSimulator extends Base {
  checkIn(v: Visitor): Promise<void>;
  checkOut(v: Pick<Visitor, 'name' | 'idNumber'>): Promise<void>;
  /** the kiosk matched the visitor against its watch list */
  watchlistHit(v: Pick<Visitor, 'name' | 'idNumber'> & { list?: string }): Promise<void>;
  onSite(): number;
}

/** A visitor registration kiosk. It sends the ID number as read from the card; the driver protects it. */
export async function startKioskSimulator(o: MqttDeviceSimulatorOptions): Promise<KioskSimulator> {
  let onSite = 0;
  const dev = await connectDevice(o, () => {});
  const sendState = () => dev.publish('state', { onSite, ts: Date.now() }).catch(() => {});
  await sendState();
  const stop = heartbeat(o.heartbeatMs, () => void sendState());
  return {
    commands: dev.commands,
    publishRaw: dev.publishRaw,
    onSite: () => onSite,
    async checkIn(v) {
      onSite++;
      await dev.publish('checkin', { name: v.name, idNumber: v.idNumber, host: v.host ?? '', purpose: v.purpose ?? '', ts: Date.now() });
      await sendState();
    },
    async checkOut(v) {
      onSite = Math.max(0, onSite - 1);
      await dev.publish('checkout', { name: v.name, idNumber: v.idNumber, ts: Date.now() });
      await sendState();
    },
    async watchlistHit(v) {
      await dev.publish('watchlist', { name: v.name, idNumber: v.idNumber, list: v.list ?? 'school', ts: Date.now() });
    },
    async close() {
      stop();
      await dev.close();
    },
  };
}

export interface ButtonSimulator extends Base {
  press(location?: string): Promise<void>;
  reset(): Promise<void>;
}

/** A one-key emergency call button. */
export async function startButtonSimulator(o: MqttDeviceSimulatorOptions & { battery?: number }): Promise<ButtonSimulator> {
  const dev = await connectDevice(o, () => {});
  const sendState = () => dev.publish('state', { battery: o.battery ?? 95, ts: Date.now() }).catch(() => {});
  await sendState();
  const stop = heartbeat(o.heartbeatMs, () => void sendState());
  return {
    commands: dev.commands,
    publishRaw: dev.publishRaw,
    press: (location = 'gate') => dev.publish('event', { type: 'pressed', location, ts: Date.now() }),
    reset: () => dev.publish('event', { type: 'reset', ts: Date.now() }),
    async close() {
      stop();
      await dev.close();
    },
  };
}
