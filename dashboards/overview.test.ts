// Regional overview on the real stack: counts by region and category, drill-down to the school,
// accident statistics as CSV (Asia/Shanghai dates), and in Chromium as the city administrator.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedUser } from './auth.ts';
import { Client, SCHOOL_A, startStack, TEST_PASSWORD } from './testing.ts';
import { shanghaiDate, shanghaiDateTime } from './overview.ts';
import { launchBrowser, loginAs, screenshot, poll } from './testing-browser.ts';

describe('shanghai dates', () => {
  it('formats in UTC+8 without daylight saving', () => {
    expect(shanghaiDate(Date.parse('2026-09-01T16:30:00Z'))).toBe('2026-09-02');
    expect(shanghaiDateTime(Date.parse('2026-07-01T00:00:00Z'))).toBe('2026-07-01 08:00:00');
  });
});

describe('overview', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  beforeAll(async () => {
    stack = await startStack();
    await seedUser(stack.t.db, { username: 'qingdao', role: 'admin', orgPath: '37/3702', password: TEST_PASSWORD });
    await stack.stage({ type: 'smoke.alarm' }, 0);
    await stack.stage({ type: 'device.fault', device: 'temp-1' }, 0);
    await stack.stage({ type: 'device.fault', device: 'temp-1' }, 1);
    await stack.stage({ type: 'smoke.alarm', drill: true }, 1);
  }, 180_000);
  afterAll(async () => {
    await stack?.close();
  }, 180_000);

  it('counts open emergencies and hazards by region and drills down to the school', async () => {
    const city = new Client(stack.server.url);
    await city.login('city');
    const top = await city.get('/api/overview');
    expect(top.status).toBe(200);
    const byPath = Object.fromEntries(top.body.regions.map((r: any) => [r.path, r]));
    expect(byPath['37/3701/370102']).toMatchObject({ emergency: 1, hazard: 1, drills: 0, devices: 4, devicesOnline: 4 });
    expect(byPath['37/3701/370103']).toMatchObject({ emergency: 0, hazard: 1, drills: 1 });
    expect(byPath['37/3701/370102'].name.zh).toBe('历下区');
    expect(top.body.trend.at(-1)).toMatchObject({ emergency: 1, hazard: 2 }); // drills left out
    const county = await city.get('/api/overview?region=37/3701/370102');
    expect(county.body.regions.map((r: any) => r.path)).toEqual([SCHOOL_A]);
    expect(county.body.canGoUp).toBe(true);
    const q = new Client(stack.server.url);
    await q.login('qingdao');
    expect((await q.get('/api/overview?region=37/3701')).status).toBe(403);
    expect((await q.get('/api/overview')).body.regions.every((r: any) => r.emergency + r.hazard === 0)).toBe(true);
  }, 120_000);

  it('exports accident statistics as CSV, audited', async () => {
    const city = new Client(stack.server.url);
    await city.login('city');
    const r = await fetch(`${stack.server.url}/api/overview/accidents.csv`, { headers: { cookie: city.cookie } });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/text\/csv/);
    expect(r.headers.get('content-disposition')).toMatch(/attachment; filename="xiaoan-accidents-37-3701-/);
    const bytes = Buffer.from(await r.arrayBuffer());
    expect([...bytes.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]); // UTF-8 BOM for spreadsheets
    const lines = bytes.subarray(3).toString('utf8').trim().split('\r\n');
    expect(lines[0]).toMatch(/^区域代码 region,区域 name,类别 category/);
    const rows = lines.slice(1).map((l) => l.split(','));
    expect(rows.find((x) => x[0] === '37/3701/370102' && x[3] === 'smoke-alarm')).toMatchObject({ 1: '历下区', 5: '1', 6: '0' });
    expect(rows.find((x) => x[0] === '37/3701/370103' && x[3] === 'smoke-alarm')).toMatchObject({ 5: '0', 6: '1' });
    const a = await stack.t.db.query<{ n: number }>("select count(*)::int as n from audit_log where action = 'export.accidents' and username = 'city'");
    expect(a.rows[0]!.n).toBe(1);
    const bad = await city.get('/api/overview/accidents.csv?from=2026-13-01');
    expect(bad.status).toBe(400);
  }, 120_000);

  it('shows the overview in Chromium and drills down to the school', async () => {
    const browser = await launchBrowser();
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, locale: 'zh-CN', timezoneId: 'Asia/Shanghai' });
      await loginAs(page, stack.server.url, 'city', TEST_PASSWORD);
      await page.click('nav a[data-page=overview]');
      await page.waitForSelector('#region-table');
      await poll(() => page.textContent('#total-emergencies')).toBe('1');
      await screenshot(page, 'city-overview');
      await page.click('#region-table tr[data-region="37/3701/370102"] a');
      await page.waitForSelector(`#region-table tr[data-region="${SCHOOL_A}"]`);
      expect(await page.getAttribute('#csv-link', 'href')).toContain('region=37%2F3701%2F370102');
      await screenshot(page, 'city-overview-county');
    } finally {
      await browser.close();
    }
  }, 120_000);
});
