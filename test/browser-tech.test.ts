// In Chromium, on the demo wiring (aedes, PGlite, the edge gateway, an ingest worker): a
// technician enrols a simulated Modbus temperature sensor from the devices page; the command
// goes down to the gateway (device.upsert), the gateway enrols it and lists it in its next birth,
// and the device appears on the page; a CSV import does the same for many devices.
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
