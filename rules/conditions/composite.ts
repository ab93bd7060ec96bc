// Composite conditions: a rule holds for a group (room, building, site) when enough of the
// group's devices met the member condition within a window. The group is one key; its state keeps
// the member devices and when each last held.
import { keyOf, type EngineCore } from '../core.ts';
import { latched, latchRuleOf, type KeyState } from '../key-state.ts';
import type { Occurrence } from '../latch-driver.ts';
import type { Params } from '../language.ts';
import { COMPOSITE_GONE, compositeReason } from '../reasons.ts';
import type { AlertTransition, CompiledRule, EvalContext } from '../types.ts';

/** Does the group now hold: at least `min` (or all known) members held within the window? */
export function groupHolds(r: CompiledRule, gs: KeyState, now: number): boolean {
  const c = r.composite!;
  const m = gs.m ?? {};
  let n = 0;
  for (const t of Object.values(m)) if (now - t <= c.withinMs) n++;
  const need = c.min ?? Math.max(1, gs.k?.length ?? 1);
  return n >= need;
}

/** The group a device belongs to for this rule (its room or building from the device list). */
export function groupOf(r: CompiledRule, ctx: EvalContext, deviceId: string): string {
  const g = r.composite!.group;
  const dev = ctx.device;
  if (g === 'room') return `room:${dev?.building ?? ''}/${dev?.room ?? deviceId}`;
  if (g === 'building') return `building:${dev?.building ?? deviceId}`;
  return 'site';
}

/** Feed one member's signal (`holds` for its device) into the group of `r`. */
export function feedComposite(core: EngineCore, out: AlertTransition[], r: CompiledRule, ctx: EvalContext, holds: boolean, p: Params, o: Occurrence): void {
  const gkey = keyOf(r.id, ctx.gatewayId, groupOf(r, ctx, o.deviceId));
  const gs = core.store.ensure(gkey, ctx.orgPath, ctx.gatewayId, o.deviceId);
  gs.k ??= [];
  if (!gs.k.includes(o.deviceId)) gs.k.push(o.deviceId);
  gs.m ??= {};
  if (holds) gs.m[o.deviceId] = o.at;
  else delete gs.m[o.deviceId];
  core.store.touch(ctx.orgPath);
  const ok = groupHolds(r, gs, o.at);
  // armed and holding: raise; an event group holding again while raised: the latch table says (retrigger)
  if (ok && (!latched(gs) || latchRuleOf(r).kind === 'discrete')) {
    gs.d = o.deviceId;
    gs.c = null;
    core.latches.trigger(out, r, gkey, gs, p, { ...o, reason: compositeReason(o.reason, r.composite!.group, Object.keys(gs.m).length) });
  } else if (!ok && latched(gs)) {
    gs.c ??= o.at;
    core.store.timed.add(gkey);
    const forMs = r.clear.kind === 'value' ? r.clear.forMs : 0;
    if (o.at - gs.c >= forMs) core.latches.clear(out, r, gkey, gs, o.at, o.value, COMPOSITE_GONE);
  } else if (ok) gs.c = null;
}

/** Time passes: an open group that no longer holds clears after its clear time. Returns whether it still needs ticks. */
export function tickComposite(core: EngineCore, out: AlertTransition[], r: CompiledRule, key: string, st: KeyState, now: number): boolean {
  if (latched(st) && !groupHolds(r, st, now)) {
    st.c ??= now;
    const forMs = r.clear.kind === 'value' ? r.clear.forMs : r.clear.kind === 'event' ? (r.clear.quietMs ?? 0) : 0;
    if (now - st.c >= forMs) core.latches.clear(out, r, key, st, now, null, COMPOSITE_GONE);
  }
  return latched(st);
}
