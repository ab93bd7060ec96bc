// Uplink / downlink topics: xiaoan/v1/{province}/{city}/{county}/{gatewayId}/{channel}
// Region codes are GB/T 2260, so a city's workers subscribe to `xiaoan/v1/37/3701/#`.

import { OrgCodeError, parseRegionCode } from './org.ts';

export const TOPIC_ROOT = 'xiaoan';
export const WIRE_VERSION = 'v1';

/**
 * `receipt` flows centre → gateway: after its storage commit the centre names the seqs it holds
 * (see receiptSchema in messages.ts). A broker's PUBACK is transport; only a receipt is custody.
 */
export const CHANNELS = ['readings', 'events', 'status', 'cmd', 'cmd-result', 'receipt'] as const;
export type Channel = (typeof CHANNELS)[number];

export interface TopicParts {
  province: string;
  city: string;
  county: string;
  gatewayId: string;
  channel: Channel;
  /** below `cmd/`: the command kind, e.g. `cmd/device.write` */
  sub?: string;
}

export class TopicError extends Error {
  constructor(message: string, readonly topic: string, readonly part: string) {
    super(message);
    this.name = 'TopicError';
  }
}

/** Gateway and device ids: letters, digits, `-`, `_`, `.`; never MQTT wildcards or separators. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function assertId(kind: string, id: string): string {
  if (!ID_PATTERN.test(id)) {
    throw new TopicError(
      `${kind} "${id}" must be 1–64 letters, digits, '.', '_' or '-' and start with a letter or digit (no '/', '+', '#')`,
      id,
      kind,
    );
  }
  return id;
}

/** The region part of a topic for a county code, e.g. '370102' → '37/3701/370102'. */
export function regionPath(county: string): string {
  const r = parseRegionCode(county);
  if (!r.county) throw new OrgCodeError(`gateway region "${county}" must be a 6-digit county code`, 'county', county);
  return `${r.province}/${r.city}/${r.county}`;
}

export function buildTopic(p: { county: string; gatewayId: string; channel: Channel; sub?: string }): string {
  assertId('gateway id', p.gatewayId);
  if (!(CHANNELS as readonly string[]).includes(p.channel)) {
    throw new TopicError(`channel "${p.channel}" is not one of ${CHANNELS.join(', ')}`, String(p.channel), 'channel');
  }
  const base = `${TOPIC_ROOT}/${WIRE_VERSION}/${regionPath(p.county)}/${p.gatewayId}/${p.channel}`;
  return p.sub ? `${base}/${p.sub}` : base;
}

/** Subscription filter for a region subtree ('37', '3701' or '370102') and optionally one channel. */
export function regionFilter(region: string, channel: Channel | '#' = '#'): string {
  const r = parseRegionCode(region);
  const levels = [r.province, r.city, r.county].filter(Boolean) as string[];
  // The remaining region levels and the gateway level are single-level wildcards.
  const tail = channel === '#' ? ['#'] : [...Array(3 - levels.length).fill('+'), '+', channel];
  return [TOPIC_ROOT, WIRE_VERSION, ...levels, ...tail].join('/');
}

export function parseTopic(topic: string): TopicParts {
  const parts = topic.split('/');
  if (parts[0] !== TOPIC_ROOT) throw new TopicError(`topic "${topic}" does not start with "${TOPIC_ROOT}/"`, topic, 'root');
  if (parts[1] !== WIRE_VERSION) {
    throw new TopicError(`topic "${topic}" has wire version "${parts[1]}"; this build speaks "${WIRE_VERSION}"`, topic, 'version');
  }
  if (parts.length < 7) {
    throw new TopicError(
      `topic "${topic}" has ${parts.length} levels; expected xiaoan/v1/{province}/{city}/{county}/{gatewayId}/{channel}`,
      topic,
      'length',
    );
  }
  const [, , province, city, county, gatewayId, channel, ...sub] = parts as [string, string, string, string, string, string, string, ...string[]];
  if (!/^\d{2}$/.test(province)) throw new TopicError(`province "${province}" in "${topic}" must be 2 digits`, topic, 'province');
  if (!/^\d{4}$/.test(city) || !city.startsWith(province)) {
    throw new TopicError(`city "${city}" in "${topic}" must be 4 digits starting with ${province}`, topic, 'city');
  }
  if (!/^\d{6}$/.test(county) || !county.startsWith(city)) {
    throw new TopicError(`county "${county}" in "${topic}" must be 6 digits starting with ${city}`, topic, 'county');
  }
  try {
    parseRegionCode(county);
  } catch (e) {
    throw new TopicError(`${(e as Error).message} (in topic "${topic}")`, topic, (e as OrgCodeError).part ?? 'county');
  }
  try {
    assertId('gateway id', gatewayId);
  } catch (e) {
    throw new TopicError(`${(e as Error).message} (in topic "${topic}")`, topic, 'gatewayId');
  }
  if (!(CHANNELS as readonly string[]).includes(channel)) {
    throw new TopicError(`channel "${channel}" in "${topic}" is not one of ${CHANNELS.join(', ')}`, topic, 'channel');
  }
  if (sub.length > 0 && channel !== 'cmd' && channel !== 'cmd-result') {
    throw new TopicError(`channel "${channel}" in "${topic}" takes no sub-levels`, topic, 'channel');
  }
  return { province, city, county, gatewayId, channel: channel as Channel, ...(sub.length ? { sub: sub.join('/') } : {}) };
}
