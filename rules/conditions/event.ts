// Event conditions: a matching event type whose data has the `where` fields, optionally N times
// within a window; cleared by a clearing event or after quiet time.
import type { DeviceEvent } from '../../contract/index.ts';
import { keyOf, type EngineCore } from '../core.ts';
import { latched, type KeyState } from '../key-state.ts';
import { eventReason, quietReason } from '../reasons.ts';
import { selects } from '../rule-index.ts';
import type { AlertTransition, CompiledRule, EvalContext } from '../types.ts';
import { feedComposite } from './composite.ts';

type EventWhen = Extract<CompiledRule['when'], { kind: 'event' }>;

/** Every `where` field equals the event's data field. */
export function matchesWhere(where: Record<string, unknown>, data: Record<string, unknown>): boolean {
  for (const k in where) if (data[k] !== where[k]) return false;
  return true;
}

/** One event against one event rule of its type. */
export function evalEvent(core: EngineCore, out: AlertTransition[], r: CompiledRule, ev: DeviceEvent, ctx: EvalContext, drill: boolean): void {
  if (!selects(r, ctx.orgPath, ctx.gatewayId, ev.device, ctx.device?.profile)) return;
  const w = r.when as EventWhen;
  if (!matchesWhere(w.where, ev.data) || !core.schedule.open(r, ctx.orgPath, ev.ts)) return;
  const key = keyOf(r.id, ctx.gatewayId, ev.device);
  const st = core.store.ensure(key, ctx.orgPath, ctx.gatewayId, ev.device);
  st.le = ev.ts;
  core.store.touch(ctx.orgPath);
  let holds = true;
  if (w.repeat) {
    st.h = [...(st.h ?? []), ev.ts].filter((t) => ev.ts - t <= w.repeat!.withinMs);
    holds = st.h.length >= w.repeat.count;
  }
  const p = core.params.get(r, ctx.orgPath, ctx.gatewayId, ev.device);
  const o = { deviceId: ev.device, at: ev.ts, value: null, eventType: ev.type, drill, reason: eventReason(ev.type, w.repeat) };
  if (r.composite) return feedComposite(core, out, r, ctx, holds, p, o);
  if (holds) core.latches.trigger(out, r, key, st, p, o);
}

/** A clearing event for an event rule of this device. */
export function clearByEvent(core: EngineCore, out: AlertTransition[], r: CompiledRule, ev: DeviceEvent, ctx: EvalContext): void {
  const key = keyOf(r.id, ctx.gatewayId, ev.device);
  const st = core.store.get(key);
  if (latched(st)) core.latches.clear(out, r, key, st!, ev.ts, null, { zh: `事件 ${ev.type}`, en: `event ${ev.type}` });
}

/** Time passes: an open event alert clears after its quiet time. Returns whether it still needs ticks. */
export function tickEvent(core: EngineCore, out: AlertTransition[], r: CompiledRule, key: string, st: KeyState, now: number): boolean {
  if (latched(st) && r.clear.kind === 'event' && r.clear.quietMs !== null && st.le !== undefined && now - st.le >= r.clear.quietMs) {
    core.latches.clear(out, r, key, st, now, null, quietReason(r.clear.quietMs));
  }
  return latched(st);
}
