// Why an alert was raised or cleared, for people, in zh-CN and English.
import type { Localized } from '../contract/index.ts';
import type { Params } from './language.ts';
import type { CompiledRule, Repeat } from './types.ts';

export const fmt = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toPrecision(3)).toString());
export const secs = (ms: number) => (ms % 60_000 === 0 && ms > 0 ? `${ms / 60_000}m` : `${ms / 1000}s`);

/** The condition of a metric rule, with the value (or rate) that met it. */
export function describeMetric(r: CompiledRule, shown: number, p: Params): Localized {
  const w = r.when;
  if (w.kind === 'threshold') {
    const t = fmt(w.compare.value.eval(p));
    const dur = w.forMs ? ` for ${secs(w.forMs)}` : '';
    return {
      zh: `${w.metric} ${fmt(shown)} ${w.compare.op === 'above' ? '高于' : '低于'} ${t}${w.forMs ? `，持续 ${secs(w.forMs)}` : ''}`,
      en: `${w.metric} ${fmt(shown)} ${w.compare.op} ${t}${dur}`,
    };
  }
  if (w.kind === 'range') {
    const lo = fmt(w.low.eval(p));
    const hi = fmt(w.high.eval(p));
    return { zh: `${w.metric} ${fmt(shown)} ${w.mode === 'outside' ? '超出' : '处于'} [${lo}, ${hi}]`, en: `${w.metric} ${fmt(shown)} ${w.mode} [${lo}, ${hi}]` };
  }
  if (w.kind === 'rate') return { zh: `${w.metric} 变化率 ${fmt(shown)}/${secs(w.perMs)}`, en: `${w.metric} changing ${fmt(shown)} per ${secs(w.perMs)}` };
  return { zh: r.name.zh, en: r.name.en };
}

/** "…, 3 times within 10m" */
export const withRepeat = (reason: Localized, rp: Repeat): Localized => ({
  zh: `${reason.zh}，${rp.count} 次/${secs(rp.withinMs)}`,
  en: `${reason.en}, ${rp.count} times within ${secs(rp.withinMs)}`,
});

export const eventReason = (type: string, rp: Repeat | undefined): Localized => (rp ? withRepeat({ zh: `事件 ${type}`, en: `event ${type}` }, rp) : { zh: `事件 ${type}`, en: `event ${type}` });

const GROUP_ZH = { room: '房间', building: '楼宇', site: '校区' } as const;
export const compositeReason = (reason: Localized, group: keyof typeof GROUP_ZH, n: number): Localized => ({
  zh: `${reason.zh}（同${GROUP_ZH[group]} ${n} 个设备）`,
  en: `${reason.en} (${n} devices in the same ${group})`,
});

export const silenceReason = (offline: boolean, unheardMs: number, expectedMs: number): Localized =>
  offline
    ? { zh: '设备离线', en: 'device offline' }
    : { zh: `设备已 ${secs(Math.round(unheardMs / 1000) * 1000)} 无数据（应每 ${secs(expectedMs)} 上报）`, en: `no data for ${secs(Math.round(unheardMs / 1000) * 1000)} (expected every ${secs(expectedMs)})` };

export const BACK_TO_NORMAL: Localized = { zh: '数值恢复正常', en: 'back to normal' };
export const RATE_BACK_TO_NORMAL: Localized = { zh: '变化率恢复正常', en: 'back to normal' };
export const REPORTING_AGAIN: Localized = { zh: '设备恢复上报', en: 'device reporting again' };
export const COMPOSITE_GONE: Localized = { zh: '组合条件不再满足', en: 'composite condition no longer holds' };
export const quietReason = (ms: number): Localized => ({ zh: `${secs(ms)} 内无新事件`, en: `quiet for ${secs(ms)}` });
export const NO_REASON: Localized = { zh: '', en: '' };
