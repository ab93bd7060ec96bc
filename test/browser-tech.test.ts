// In Chromium, on the demo wiring (aedes, PGlite, the edge gateway, an ingest worker): a
// technician enrols a simulated Modbus temperature sensor from the devices page; the command
// goes down to the gateway (device.upsert), the gateway enrols it and lists it in its next birth,
// and the device appears on the page; a CSV import does the same for many devices; live test,
// discovery and removal go to the gateway as device.test / device.discover / device.remove.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { silentLogger } from '../contract/index.ts';
import { getProfile, startModbusSimulator, type ModbusProfile, type ModbusSimulator } from '../device-drivers/index.ts';
import { startDemo, type Demo } from '../cli/demo.ts';
import { launchBrowser, loginAs, screenshot, poll } from '../dashboards/testing-browser.ts';

const PASSWORD = 'browser-test-pw-1';

describe('technician in Chromium on the demo wiring', () => {
  let dir: string;
  let demo: Demo;
  let sim: ModbusSimulator;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xiaoan-tech-'));
    demo = await startDemo({ dataDir: dir, port: 0, password: PASSWORD, drillAfterMs: 3_600_000, drillEveryMs: 0, log: silentLogger });
    sim = await startModbusSimulator({ profile: (await getProfile('temp-humidity-generic')) as ModbusProfile, host: '127.0.0.1' });
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 }, locale: 'zh-CN', timezoneId: 'Asia/Shanghai' });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await sim?.close();
    await demo?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 180_000);

  it('enrols a device through the gateway and sees it in the device list', async () => {
    await loginAs(page, demo.url, 'tech', PASSWORD);
    await page.click('nav a[data-page=devices]');
    await page.waitForSelector('#device-table tr[data-device="smoke-1"]');
    await page.fill('#enrol-id', 'temp-2');
    if (await page.$('select#enrol-profile')) await page.selectOption('#enrol-profile', 'temp-humidity-generic');
    else await page.fill('#enrol-profile', 'temp-humidity-generic');
    await page.fill('#enrol-url', sim.url);
    await page.fill('#enrol-name', '实验楼二层温湿度');
    await page.fill('#enrol-building', '实验楼');
    await page.fill('#enrol-room', '201');
    await page.click('#enrol-submit');
    await poll(() => page.textContent('#devices-notice'), { timeout: 20_000 }).toMatch(/已发送到网关.*temp-2/);
    expect(await page.getAttribute('#devices-notice', 'class')).not.toMatch(/bad/);
    // the gateway's next birth lists it; the page refreshes by itself
    await page.waitForSelector('#device-table tr[data-device="temp-2"]', { timeout: 30_000 });
    expect(await page.textContent('#device-table tr[data-device="temp-2"]')).toContain('实验楼二层温湿度');
    await screenshot(page, 'tech-enrolled');
  }, 120_000);

  it('imports devices from CSV in bulk', async () => {
    await page.fill('#import-csv', `id,profile,url,name,building,room\ntemp-3,temp-humidity-generic,${sim.url},三楼温湿度,实验楼,301\n`);
    await page.click('#import-submit');
    await poll(() => page.textContent('#devices-notice'), { timeout: 20_000 }).toMatch(/temp-3: ✓/);
    await page.waitForSelector('#device-table tr[data-device="temp-3"]', { timeout: 30_000 });
    await page.fill('#import-csv', 'id,profile\nx,y\n');
    await page.click('#import-submit');
    await poll(() => page.textContent('#devices-notice')).toMatch(/url.*(缺少必需列|required column)/s);
  }, 120_000);

  it('tests a device live, discovers devices and removes one, each through the gateway', async () => {
    // live test from the row's button: the gateway reads the device now and answers with its values
    await page.click('#device-table tr[data-device="temp-2"] .act-test');
    await poll(() => page.textContent('#device-table tr[data-device="temp-2"] .test-result'), { timeout: 30_000 }).toMatch(/✓.*(device answered|设备应答正常).*=/);
    // Modbus discovery on the simulator's port finds unit 1, already enrolled as temp-2
    await page.selectOption('#discover-protocol', 'modbus');
    await page.fill('#discover-target', sim.url);
    await page.click('#discover');
    await poll(() => page.textContent('#discover-found'), { timeout: 30_000 }).toMatch(/unit=1.*(已登记|already enrolled)/s);
    // ONVIF discovery by unicast finds the demo camera, enrolled as cam-1
    await page.selectOption('#discover-protocol', 'onvif');
    await page.fill('#discover-target', `127.0.0.1:${demo.sims.camera.discoveryPort}`);
    await page.click('#discover');
    await poll(() => page.textContent('#discover-found'), { timeout: 30_000 }).toContain(`onvif://127.0.0.1:${new URL(demo.sims.camera.xaddr).port}`);
    await screenshot(page, 'tech-discovered');
    // remove from the row's button (after the confirm dialog): the gateway stops polling and forgets it
    expect(demo.gateway.registry.get('temp-3')).toBeDefined();
    page.once('dialog', (d) => void d.accept());
    await page.click('#device-table tr[data-device="temp-3"] .act-remove');
    await poll(() => page.textContent('#devices-notice'), { timeout: 30_000 }).toMatch(/removed temp-3/);
    expect(await page.getAttribute('#devices-notice', 'class')).not.toMatch(/bad/);
    expect(demo.gateway.registry.get('temp-3')).toBeUndefined();
    expect(demo.gateway.runner('temp-3')).toBeUndefined();

    // the API answers: a camera test carries no password; removing again is refused in zh and en
    const login = await fetch(`${demo.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'tech', password: PASSWORD }) });
    const { token } = (await login.json()) as { token: string };
    const post = async (path: string, body: unknown = {}) => {
      const r = await fetch(`${demo.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, text: await r.text() };
    };
    const camPassword = decodeURIComponent(new URL(demo.sims.camera.url.replace(/^onvif:/, 'http:')).password);
    expect(camPassword.length).toBeGreaterThan(3);
    const camTest = await post('/api/gateways/gw-3737000001/devices/cam-1/test');
    expect(camTest.status).toBe(200);
    expect(camTest.text).not.toContain(camPassword);
    const again = await post('/api/gateways/gw-3737000001/devices/temp-3/remove');
    expect(again.status).toBe(422);
    expect(JSON.parse(again.text).error).toMatchObject({ code: 'gateway_refused', message: { zh: expect.stringMatching(/网关未能移除设备/), en: expect.stringMatching(/not enrolled/) } });
    // a gateway outside the technician's school is not found, whatever the command
    expect((await post('/api/gateways/gw-3737000002/devices/x-1/remove')).status).toBe(404);
    expect((await post('/api/gateways/gw-3737000001/discover', { protocol: 'modbus' })).status).toBe(400);
  }, 180_000);

  it('shows the gateway refusal for a bad device, and the desk cannot manage devices', async () => {
    await page.fill('#enrol-id', 'bad-1');
    if (await page.$('select#enrol-profile')) await page.selectOption('#enrol-profile', 'temp-humidity-generic');
    else await page.fill('#enrol-profile', 'temp-humidity-generic');
    await page.fill('#enrol-url', 'mqtt://bad-1');
    await page.click('#enrol-submit');
    await poll(() => page.getAttribute('#devices-notice', 'class'), { timeout: 20_000 }).toMatch(/bad/);
    await screenshot(page, 'tech-refused');
    const desk = await browser.newPage();
    await loginAs(desk, demo.url, 'desk', PASSWORD);
    await desk.click('nav a[data-page=devices]');
    await desk.waitForSelector('#device-table');
    expect(await desk.$('#enrol-form')).toBeNull();
    await desk.close();
  }, 120_000);
});
