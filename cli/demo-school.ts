// The demo's org tree and school: one place that names them, used by `xiaoan demo`, the
// end-to-end tests and the docs.

export const DEMO = {
  province: '37',
  city: '3701',
  county: '370102',
  school: {
    orgPath: '37/3701/370102/3737000001',
    code: '3737000001',
    zh: '济南市历下区示范中学',
    en: 'Lixia Demonstration Middle School, Jinan',
  },
  /** a second school, in another county, so scope can be seen to hold */
  otherSchool: {
    county: '370103',
    countyZh: '市中区',
    countyEn: 'Shizhong District',
    orgPath: '37/3701/370103/3737000002',
    code: '3737000002',
    zh: '济南市市中区实验小学',
    en: 'Shizhong Experimental Primary School, Jinan',
  },
  countyZh: '历下区',
  countyEn: 'Lixia District',
  gatewayId: 'gw-3737000001',
  otherGatewayId: 'gw-3737000002',
} as const;

export type DemoRole = 'desk' | 'tech' | 'author' | 'admin';

/** The demo accounts: name, role and the org node their scope is. */
export const DEMO_USERS: ReadonlyArray<{ username: string; role: DemoRole; orgPath: string; displayName: string }> = [
  { username: 'desk', role: 'desk', orgPath: DEMO.school.orgPath, displayName: '安保值班员 Security desk' },
  { username: 'tech', role: 'tech', orgPath: DEMO.school.orgPath, displayName: '校园技术员 Campus technician' },
  { username: 'author', role: 'author', orgPath: '37', displayName: '规则编写员 Rule author' },
  { username: 'city', role: 'admin', orgPath: '37/3701', displayName: '济南市管理员 Jinan city administrator' },
  { username: 'province', role: 'admin', orgPath: '37', displayName: '省级管理员 Provincial administrator' },
  { username: 'desk2', role: 'desk', orgPath: DEMO.otherSchool.orgPath, displayName: '实验小学值班员 Desk of the other school' },
];
