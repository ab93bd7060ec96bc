// Override resolution: a rule's parameters as they apply to one device, after the overrides of
// its province → city → county → school → device (compile.ts sorts them by depth).
import type { Params } from './language.ts';
import type { CompiledRule } from './types.ts';

/** Parameters after overrides: province default → city → county → school → device. */
export function resolveParams(r: CompiledRule, orgPath: string, gatewayId: string, deviceId: string): Params {
  if (r.overrides.length === 0) return r.params;
  let out: Record<string, number> | null = null;
  for (const o of r.overrides) {
    const applies = o.device
      ? o.device === deviceId || o.device === `${gatewayId}/${deviceId}`
      : o.schoolId
        ? orgPath.endsWith('/' + o.schoolId)
        : orgPath === o.orgPath || orgPath.startsWith(o.orgPath + '/');
    if (applies) out = { ...(out ?? r.params), ...o.params };
  }
  return out ?? r.params;
}

/** resolveParams, remembered per (rule, site, gateway, device); bounded; cleared on reload. */
export class ParamCache {
  private cache = new Map<string, Params>();
  constructor(private readonly max = 200_000) {}
  get(r: CompiledRule, o: string, g: string, d: string): Params {
    if (r.overrides.length === 0) return r.params; // the common case: no key built
    const ck = `${r.id}|${o}|${g}|${d}`;
    let p = this.cache.get(ck);
    if (!p) {
      p = resolveParams(r, o, g, d);
      if (this.cache.size > this.max) this.cache.clear();
      this.cache.set(ck, p);
    }
    return p;
  }
  clear(): void {
    this.cache.clear();
  }
}
