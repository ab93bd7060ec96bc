// MQTT devices (gates, kiosks, call buttons) publish to the gateway's device broker; this driver
// maps their payloads to readings and events as the device's profile declares, and sends commands
// for writable points. A bad payload is counted in health, logged without its content and
// thrown to the device broker, which sets it aside (quarantine) before acknowledging it.
import { randomBytes } from 'node:crypto';
import type { DeviceDriver, DeviceSpec, DriverContext, Observation } from '../types.ts';
import { DriverError } from '../types.ts';
import type { MqttProfile } from '../profile-schema.ts';
import { ALARM_EVENT_TYPES } from '../profile-schema.ts';
import { HealthTracker } from '../health.ts';
import { protectPayload } from './privacy.ts';
import { MAX_DEVICE_PAYLOAD } from './broker.ts';
import { ID_PATTERN } from '../../contract/index.ts';

/** A push device is offline after this many of its intervals without a message. */
export const SILENT_AFTER_INTERVALS = 3;

export function parseMqttDeviceUrl(url: string): string {
  const m = /^mqtt:\/\/([^/?#]+)\/?$/.exec(url);
  if (!m || !ID_PATTERN.test(m[1]!)) throw new DriverError(`设备地址无效 invalid device URL "${url}": write mqtt://DEVICE-ID (the id the device logs in with)`, 'bad_url', false);
  return m[1]!;
}

let warnedKey = false;
const processKey = randomBytes(32).toString('hex');

export async function createMqttDriver(spec: DeviceSpec, profile: MqttProfile, ctx: DriverContext): Promise<DeviceDriver> {
  const deviceId = parseMqttDeviceUrl(spec.url);
  const log = ctx.log.child(`mqtt:${spec.id}`);
  const health = new HealthTracker(ctx.clock);
  const intervalMs = spec.intervalMs ?? profile.poll.interval;
  const needsKey = profile.mqtt.privacy.some((p) => p.kind === 'resident-id');
  let hashKey = ctx.idHashKey ?? process.env.XIAOAN_ID_HASH_KEY ?? '';
  if (needsKey && !hashKey) {
    if (!warnedKey) log.warn('no ID hash key configured (XIAOAN_ID_HASH_KEY); using a per-process key, so watch-list hashes change on restart');
    warnedKey = true;
    hashKey = processKey;
  }
  let unsubscribe: (() => void) | null = null;
  let closed = false;

  function toObservations(subtopic: string, payload: Buffer): Observation[] {
    if (payload.length > MAX_DEVICE_PAYLOAD) throw new DriverError(`payload of ${payload.length} bytes is too large`, 'bad_payload', false);
    let body: unknown;
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      throw new DriverError(`payload on ${subtopic} is not JSON`, 'bad_payload', false);
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new DriverError(`payload on ${subtopic} is not a JSON object`, 'bad_payload', false);
    const protectedBody = protectPayload(body as Record<string, unknown>, profile.mqtt.privacy, hashKey);
    const data = protectedBody.payload;
    const ts = deviceTime(data.ts) ?? ctx.clock.now();
    const out: Observation[] = [];
    const rules = profile.mqtt.messages.filter((m) => m.topic === subtopic && Object.entries(m.match ?? {}).every(([k, v]) => data[k] === v));
    if (protectedBody.rejected && rules.some((r) => r.event)) {
      // GB 11643 check failed: the kiosk read a bad number; say so, without the number
      out.push({ kind: 'event', type: 'visitor.id_invalid', ts, priority: 'normal', data: { topic: subtopic, field: protectedBody.rejected.field, reason: protectedBody.rejected.reason } });
      log.warn('resident ID failed the check; message not passed on', { topic: subtopic, reason: protectedBody.rejected.reason });
      return out;
    }
    for (const r of rules) {
      for (const rd of r.readings ?? []) {
        const raw = data[rd.field];
        if (raw === undefined) continue;
        const n = rd.map ? rd.map[String(raw)] : typeof raw === 'number' ? raw : typeof raw === 'boolean' ? (raw ? 1 : 0) : Number(raw);
        if (n === undefined || !Number.isFinite(n)) {
          log.warn('reading not a number', { metric: rd.metric, topic: subtopic });
          continue;
        }
        out.push({ kind: 'reading', metric: rd.metric, value: Number((n * rd.scale).toPrecision(12)), ts, quality: 'good' });
      }
      if (r.event) {
        const ed: Record<string, unknown> = {};
        for (const [k, field] of Object.entries(r.event.data ?? {})) if (data[field] !== undefined) ed[k] = clip(data[field]);
        out.push({ kind: 'event', type: r.event.type, ts, priority: r.event.priority ?? (ALARM_EVENT_TYPES.has(r.event.type) ? 'alarm' : 'normal'), data: ed });
      }
    }
    return out;
  }

  function deviceTime(v: unknown): number | null {
    // a device clock is trusted only when it is plausible (within a day of ours)
    if (typeof v !== 'number' || !Number.isFinite(v)) return null;
    return Math.abs(v - ctx.clock.now()) < 86_400_000 ? Math.round(v) : null;
  }

  return {
    spec,
    health() {
      const h = health.snapshot();
      if (h.lastSeen !== null && ctx.clock.now() - h.lastSeen > SILENT_AFTER_INTERVALS * intervalMs && h.state !== 'offline') {
        health.silent(`no message for ${Math.floor((ctx.clock.now() - h.lastSeen) / 1000)} s`);
        return health.snapshot();
      }
      return h;
    },
    async subscribe(onObservation) {
      if (!ctx.deviceBroker) throw new DriverError(`MQTT device ${spec.id} needs the gateway's device broker (DriverContext.deviceBroker)`, 'no_broker', false);
      unsubscribe?.();
      unsubscribe = ctx.deviceBroker.onDeviceMessage(deviceId, (topic, payload) => {
        if (closed) return;
        const subtopic = topic.slice(`devices/${deviceId}/`.length);
        try {
          const obs = toObservations(subtopic, payload);
          health.ok();
          for (const o of obs) {
            try {
              onObservation(o);
            } catch (e) {
              log.error('observation listener failed', { error: e });
            }
          }
        } catch (e) {
          const err = e instanceof DriverError ? e : new DriverError(String((e as Error)?.message ?? e), 'driver_bug', false);
          health.partial(err);
          log.warn('device message refused', { topic: subtopic, error: err.message });
          // the broker sets the unreadable message aside (quarantine) before it acknowledges it
          throw err;
        }
      });
    },
    async write(point, value) {
      const cmd = profile.mqtt.commands[point];
      if (!cmd)
        throw new DriverError(`点位不可写 point "${point}" is not writable on ${profile.id}; writable: ${Object.keys(profile.mqtt.commands).join(', ') || 'none'}`, 'not_writable', false);
      if (!ctx.deviceBroker) throw new DriverError(`MQTT device ${spec.id} needs the gateway's device broker`, 'no_broker', false);
      const payload = fill(cmd.payload, value);
      await ctx.deviceBroker.publishToDevice(deviceId, cmd.topic, JSON.stringify({ ...payload, ts: ctx.clock.now() }));
    },
    async close() {
      closed = true;
      unsubscribe?.();
      unsubscribe = null;
    },
  };
}

function fill(template: Record<string, unknown>, value: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(template)) out[k] = v === '$value' ? value : v;
  return out;
}

/** Event data from a device is bounded: strings to 200 characters, numbers and bools as they are. */
function clip(v: unknown): unknown {
  if (typeof v === 'string') return v.slice(0, 200);
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  return JSON.stringify(v).slice(0, 200);
}
