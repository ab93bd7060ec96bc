// Absence conditions: a device silent for longer than its limit (a fixed `for`, or `factor` times
// its expected interval), or reported offline. Cleared when data arrives again.
import { keyOf, type EngineCore } from '../core.ts';
import { latched } from '../key-state.ts';
import { REPORTING_AGAIN, silenceReason } from '../reasons.ts';
import { selects } from '../rule-index.ts';
import type { AlertTransition, CompiledRule, DeviceInfo } from '../types.ts';

type AbsenceWhen = Extract<CompiledRule['when'], { kind: 'absence' }>;

/** Data arrived from a device: its absence alerts clear. */
export function dataArrived(core: EngineCore, out: AlertTransition[], gatewayId: string, device: string, ts: number): void {
  for (const r of core.idx.absence) {
    const key = keyOf(r.id, gatewayId, device);
    const st = core.store.get(key);
    if (latched(st)) core.latches.clear(out, r, key, st!, ts, null, REPORTING_AGAIN);
  }
}

/** How long a device has been silent, for clearing (`silent`) and for raising (`raiseNow`, counted from when watching began). */
export function silence(w: AbsenceWhen, dev: DeviceInfo, last: number, now: number) {
  const limit = w.forMs ?? (dev.expectedIntervalMs ? dev.expectedIntervalMs * w.factor : null);
  const offline = w.offline && dev.state === 'offline';
  // to clear, data must really be recent; to raise, silence counts only since watching began
  const silentFor = Number.isFinite(last) ? now - last : null;
  const silent = offline || (limit !== null && silentFor !== null && silentFor > limit);
  const since = Math.max(last, dev.watchedSince ?? -Infinity);
  const unheardFor = Number.isFinite(since) ? now - since : null;
  const raiseNow = offline || (limit !== null && unheardFor !== null && unheardFor > limit);
  return { limit, offline, silent, raiseNow, unheardFor };
}

/** One absence rule on one device at a tick; `last` is the latest data time known for it. */
export function tickAbsence(core: EngineCore, out: AlertTransition[], r: CompiledRule, dev: DeviceInfo, last: number, now: number, drill: boolean): void {
  if (!selects(r, dev.orgPath, dev.gatewayId, dev.deviceId, dev.profile)) return;
  const key = keyOf(r.id, dev.gatewayId, dev.deviceId);
  const s = silence(r.when as AbsenceWhen, dev, last, now);
  const st = core.store.get(key);
  if (s.raiseNow && !latched(st)) {
    if (!core.schedule.open(r, dev.orgPath, now)) return;
    const fresh = core.store.ensure(key, dev.orgPath, dev.gatewayId, dev.deviceId);
    const p = core.params.get(r, dev.orgPath, dev.gatewayId, dev.deviceId);
    const reason = silenceReason(s.offline, s.unheardFor ?? 0, dev.expectedIntervalMs ?? s.limit ?? 0);
    core.latches.trigger(out, r, key, fresh, p, { deviceId: dev.deviceId, at: now, value: null, eventType: s.offline ? 'device.offline' : null, drill, reason });
  } else if (!s.silent && !s.raiseNow && latched(st)) {
    core.latches.clear(out, r, key, st!, now, null, REPORTING_AGAIN);
  }
}
