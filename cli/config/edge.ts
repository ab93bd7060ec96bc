// The edge tier's configuration (`tier: edge`): the gateway's own schema from edge/index.ts, so
// `xiaoan config check` and `xiaoan edge` accept exactly the same files. The edge schema keeps
// its explanations as comments; the descriptions below feed `xiaoan config env edge` and
// docs/configuration.md.
import { edgeConfigSchema } from '../../edge/index.ts';

export const edgeSchema = edgeConfigSchema;
export type { EdgeConfig as EdgeFileConfig } from '../../edge/index.ts';

export const edgeDescriptions: Record<string, string> = {
  gatewayId: "this gateway's id; also its MQTT username and client id, e.g. gw-3737000001",
  county: '6-digit GB/T 2260 county code of the school, e.g. 370102',
  site: 'org path of the school (or college) the gateway serves, e.g. 37/3701/370102/3737000001',
  name: 'display name of the gateway',
  'uplink.url': 'central broker: mqtt://HOST:1883, mqtts://HOST:8883, ws:// or wss://',
  'uplink.username': 'MQTT username; defaults to gatewayId',
  'uplink.password': 'gateway password (use XIAOAN_UPLINK__PASSWORD_FILE)',
  'uplink.tls.ca': 'CA certificate (PEM file, relative to the config file) to trust for the broker',
  'uplink.tls.cert': 'client certificate (PEM file) when the broker wants one',
  'uplink.tls.key': 'client private key (PEM file)',
  'uplink.tls.rejectUnauthorized': 'refuse brokers whose certificate does not verify',
  'uplink.keepaliveSeconds': 'MQTT keepalive',
  'uplink.reconnectMs': 'wait before reconnecting after the uplink drops',
  'uplink.batchSize': 'records per uplink batch',
  'uplink.inflight': 'batches awaiting PUBACK at once',
  dataDir: 'buffer and device registry (SQLite files); /var/lib/xiaoan on an installed gateway',
  'deviceBroker.port': 'local MQTT broker for MQTT devices (gates, kiosks)',
  'deviceBroker.host': 'local broker bind address; 0.0.0.0 to reach it from the school LAN',
  'http.port': 'gateway REST API, /metrics and /healthz',
  'http.host': 'REST bind address',
  'http.token': 'the bearer token the REST API wants (metrics and healthz stay open); when unset, one is generated at first start into DATA_DIR/http-token',
  devices: 'devices seeded into the registry at start (JSON list in the environment)',
  'scheduler.jitter': '± fraction of the interval each poll is moved by, so devices do not poll in lockstep',
  'scheduler.offlineAfterFailures': 'failed polls in a row before a device is offline (1 failure = degraded)',
  'commands.allow': 'command kinds this gateway accepts from the centre (JSON list)',
  'commands.maxAgeMs': 'commands older than this are refused as stale',
};
