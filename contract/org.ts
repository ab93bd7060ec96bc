// Org tree codes.
//
// Regions follow GB/T 2260: six digits, the first two the province, the first four the city,
// all six the county (district). Schools carry the Ministry of Education's 10-digit school
// identifier (学校标识码). Higher education hangs universities below the province and colleges
// (院系) below a university.
//
// A node of the tree is addressed by its *org path*: the codes from the province down, joined
// with '/', e.g. `37/3701/370102/3737000001` (a school in Lixia district, Jinan) or
// `37/4137010422/4137010422-03` (a college of a university). A user's scope is one org path;
// everything they may read or change has an org path that equals it or lies below it.

export class OrgCodeError extends Error {
  constructor(
    message: string,
    /** which part was wrong: 'province' | 'city' | 'county' | 'school' | 'college' | 'path' */
    readonly part: string,
    readonly value: string,
  ) {
    super(message);
    this.name = 'OrgCodeError';
  }
}

const SIX_DIGITS = /^\d{6}$/;
const TEN_DIGITS = /^\d{10}$/;

/** The province code of a region code: '37' for '370102', '3701' or '37'. */
export function provinceOf(region: string): string {
  return region.slice(0, 2);
}

/**
 * Validate a region code given as 2 (province), 4 (city) or 6 (county) digits and return the
 * three levels. GB/T 2260 reserves 00 at each level for "the level above itself".
 */
export function parseRegionCode(code: string): { province: string; city?: string; county?: string } {
  if (!/^\d+$/.test(code) || ![2, 4, 6].includes(code.length)) {
    throw new OrgCodeError(
      `region code "${code}" must be 2, 4 or 6 digits (GB/T 2260, e.g. 37, 3701, 370102)`,
      'path',
      code,
    );
  }
  const province = code.slice(0, 2);
  if (Number(province) < 11 || Number(province) > 82) {
    throw new OrgCodeError(`province "${province}" of "${code}" is not a GB/T 2260 province (11–82)`, 'province', province);
  }
  if (code.length === 2) return { province };
  const city = code.slice(0, 4);
  if (city.endsWith('00')) {
    throw new OrgCodeError(`city "${city}" of "${code}" ends in 00, which GB/T 2260 keeps for the province itself`, 'city', city);
  }
  if (code.length === 4) return { province, city };
  if (code.endsWith('00')) {
    throw new OrgCodeError(`county "${code}" ends in 00, which GB/T 2260 keeps for the city itself`, 'county', code);
  }
  return { province, city, county: code };
}

export function isCountyCode(code: string): boolean {
  return SIX_DIGITS.test(code) && !code.endsWith('00') && !code.slice(0, 4).endsWith('00');
}

/** The Ministry of Education's school identifier: exactly ten digits. */
export function assertSchoolId(id: string): string {
  if (!TEN_DIGITS.test(id)) {
    throw new OrgCodeError(`school identifier "${id}" must be exactly 10 digits (学校标识码)`, 'school', id);
  }
  return id;
}

export type OrgLevel = 'province' | 'city' | 'county' | 'school' | 'university' | 'college';

export interface OrgNodeRef {
  path: string;
  level: OrgLevel;
  code: string;
}

/**
 * Parse and validate an org path, reporting which segment is wrong. Accepted shapes:
 *   37
 *   37/3701
 *   37/3701/370102
 *   37/3701/370102/<school id>
 *   37/<university id>
 *   37/<university id>/<university id>-<nn>      (college)
 */
export function parseOrgPath(path: string): OrgNodeRef {
  const parts = path.split('/');
  if (parts.some((p) => p === '')) {
    throw new OrgCodeError(`org path "${path}" has an empty segment`, 'path', path);
  }
  const [province, second, third, fourth, ...rest] = parts;
  parseRegionCode(province!);
  if (province!.length !== 2) {
    throw new OrgCodeError(`org path "${path}" must start with a 2-digit province code`, 'province', province!);
  }
  if (second === undefined) return { path, level: 'province', code: province! };
  if (TEN_DIGITS.test(second)) {
    // Higher education: province → university → college.
    if (third === undefined) return { path, level: 'university', code: second };
    if (fourth !== undefined) throw new OrgCodeError(`org path "${path}" is deeper than a college`, 'path', path);
    if (!new RegExp(`^${second}-\\d{2}$`).test(third)) {
      throw new OrgCodeError(
        `college "${third}" in "${path}" must be the university code, a dash and two digits (e.g. ${second}-01)`,
        'college',
        third,
      );
    }
    return { path, level: 'college', code: third };
  }
  if (second.length !== 4 || !second.startsWith(province!)) {
    throw new OrgCodeError(`city "${second}" in "${path}" must be 4 digits starting with province ${province}`, 'city', second);
  }
  parseRegionCode(second);
  if (third === undefined) return { path, level: 'city', code: second };
  if (third.length !== 6 || !third.startsWith(second)) {
    throw new OrgCodeError(`county "${third}" in "${path}" must be 6 digits starting with city ${second}`, 'county', third);
  }
  parseRegionCode(third);
  if (fourth === undefined) return { path, level: 'county', code: third };
  if (rest.length > 0) throw new OrgCodeError(`org path "${path}" is deeper than a school`, 'path', path);
  assertSchoolId(fourth);
  return { path, level: 'school', code: fourth };
}

/** True when `path` is the scope node itself or lies below it. */
export function inScope(scope: string, path: string): boolean {
  return path === scope || path.startsWith(scope + '/');
}

/** The org paths from the province down to `path` itself, e.g. for escalation school → county → city. */
export function ancestorsOf(path: string): string[] {
  const parts = path.split('/');
  return parts.map((_, i) => parts.slice(0, i + 1).join('/'));
}

/** Shandong (37) and its 16 prefecture-level cities, GB/T 2260. */
export const SHANDONG = { code: '37', name: { zh: '山东省', en: 'Shandong' } } as const;
export const SHANDONG_CITIES: ReadonlyArray<{ code: string; zh: string; en: string }> = [
  { code: '3701', zh: '济南市', en: 'Jinan' },
  { code: '3702', zh: '青岛市', en: 'Qingdao' },
  { code: '3703', zh: '淄博市', en: 'Zibo' },
  { code: '3704', zh: '枣庄市', en: 'Zaozhuang' },
  { code: '3705', zh: '东营市', en: 'Dongying' },
  { code: '3706', zh: '烟台市', en: 'Yantai' },
  { code: '3707', zh: '潍坊市', en: 'Weifang' },
  { code: '3708', zh: '济宁市', en: 'Jining' },
  { code: '3709', zh: '泰安市', en: "Tai'an" },
  { code: '3710', zh: '威海市', en: 'Weihai' },
  { code: '3711', zh: '日照市', en: 'Rizhao' },
  { code: '3713', zh: '临沂市', en: 'Linyi' },
  { code: '3714', zh: '德州市', en: 'Dezhou' },
  { code: '3715', zh: '聊城市', en: 'Liaocheng' },
  { code: '3716', zh: '滨州市', en: 'Binzhou' },
  { code: '3717', zh: '菏泽市', en: 'Heze' },
];
