// Who may use which MQTT client id. One table for every broker Xiaoan runs (the central aedes in
// ingest/broker.ts, the gateway's device broker in device-drivers/mqtt/broker.ts) and the rule the
// production brokers' configs copy (docker/emqx, docker/mosquitto; docs/security.md).
//
// A broker keeps one session per client id and drops the older connection when a second one
// arrives with the same id ([MQTT-3.1.4-2]). If any valid login could pick any id, one gateway's
// password would kick the ingest workers' lanes off, and one device's password another device.
// So the id is bound to the identity the password proved; anything else is refused at CONNECT
// with return code 2, identifier rejected ([MQTT-3.2.2-3], CONNACK 0x02).

export type MqttIdentity =
  /**
   * a school gateway: its gateway id (its uplink), or `{gatewayId}-{suffix}` for a second
   * connection with its credentials (the Node-RED raise node uses `{gatewayId}-node-red`); the
   * broker also refuses a suffixed id that names another registered gateway (longerOwners).
   */
  | { kind: 'gateway'; id: string }
  /** a service account (ingest workers, dashboard server, Node-RED): ids under its own prefixes */
  | { kind: 'service'; username: string; prefixes: readonly string[] }
  /**
   * a device on a gateway's broker: its device id, or `{deviceId}-{suffix}` when it needs several
   * connections; `otherDevices` are the ids of the gateway's other devices, so that device `gate-1`
   * cannot take `gate-1-b`, which is another device's own id.
   */
  | { kind: 'device'; id: string; otherDevices: Iterable<string> };

/** The client id prefix a service account gets when none is configured: `svc-ingest` → `xiaoan-ingest-`. */
export function defaultServicePrefix(username: string): string {
  return `xiaoan-${username.replace(/^svc-/, '')}-`;
}

/** null when `clientId` belongs to `who`; otherwise why not (for the broker's log, never for the client). */
export function clientIdRefusal(who: MqttIdentity, clientId: string): string | null {
  // [MQTT-3.1.3-6] a server may assign an id to an empty one; a bound id must be chosen by its owner
  if (clientId === '') return 'an empty client id cannot be bound to a login';
  // MQTT 3.1.1 §4.7.1: + and # are wildcards; an id carrying them would confuse every ACL built on ids
  if (/[+#/]/.test(clientId)) return 'client id contains +, # or /';
  switch (who.kind) {
    case 'gateway':
      return clientId === who.id || clientId.startsWith(`${who.id}-`) ? null : `gateway ${who.id} may use only client ids "${who.id}" or "${who.id}-…"`;
    case 'service':
      return who.prefixes.some((p) => p.length > 0 && clientId.startsWith(p) && clientId.length > p.length)
        ? null
        : `service account ${who.username} may use only client ids starting with ${who.prefixes.join(' or ')}`;
    case 'device':
      return deviceOwns(who.id, clientId, who.otherDevices) ? null : `device ${who.id} may use only client ids "${who.id}" or "${who.id}-…"`;
  }
}

/**
 * The ids longer than `ownId` that `clientId` could also belong to (`gw-1-b-x` → `gw-1-b`,
 * `gw-1-b-x`): if one of them is a registered identity, the client id is that one's, not `ownId`'s.
 */
export function longerOwners(ownId: string, clientId: string): string[] {
  if (!clientId.startsWith(`${ownId}-`)) return [];
  const out: string[] = [];
  for (let i = clientId.indexOf('-', ownId.length + 1); i !== -1; i = clientId.indexOf('-', i + 1)) out.push(clientId.slice(0, i));
  if (clientId !== ownId) out.push(clientId);
  return out;
}

/** Whether a client id is the device's own: the longest device id it names must be this device's. */
function deviceOwns(deviceId: string, clientId: string, others: Iterable<string>): boolean {
  const names = (id: string) => clientId === id || clientId.startsWith(`${id}-`);
  if (!names(deviceId)) return false;
  for (const other of others) {
    if (other !== deviceId && other.length > deviceId.length && names(other)) return false;
  }
  return true;
}

/** Whether a gateway's own id would fall under a service account's prefix (refused: it could take a service lane). */
export function collidesWithService(gatewayId: string, servicePrefixes: Iterable<string>): boolean {
  for (const p of servicePrefixes) if (gatewayId.startsWith(p)) return true;
  return false;
}
