// In a real browser (Debian's Chromium), on the real store and alerting module: the security desk
// logs in, a staged alarm arrives live without a reload (sound cue, banner, drill mark), the desk
// acknowledges it with a comment and sees the state change; emergencies sort above hazards; a
// desk of another school never sees it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { startStack, TEST_PASSWORD } from './testing.ts';
import { launchBrowser, loginAs, screenshot, poll } from './testing-browser.ts';

describe('alarm console in Chromium', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  let browser: Browser;
  let page: Page;
  let other: Page;

  beforeAll(async () => {
    stack = await startStack();
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 }, locale: 'zh-CN', timezoneId: 'Asia/Shanghai' });
    other = await browser.newPage({ viewport: { width: 1280, height: 700 } });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
  }, 180_000);

  it('refuses a wrong password on the form', async () => {
    await page.goto(stack.server.url + '/');
    await page.fill('#username', 'desk');
    await page.fill('#password', 'wrong-password');
    await page.click('#login-submit');
    await poll(() => page.textContent('#login-error')).toContain('用户名或密码错误');
    await screenshot(page, 'login-refused');
  }, 120_000);

  it('shows a staged alarm live, marked as a drill, and lets the desk acknowledge it', async () => {
    await loginAs(page, stack.server.url, 'desk', TEST_PASSWORD);
    await loginAs(other, stack.server.url, 'deskb', TEST_PASSWORD);
    await page.waitForSelector('#live.on');
    await other.waitForSelector('#live.on');
    await poll(() => page.textContent('#page')).toContain('当前没有告警');
    await stack.stage({ type: 'device.fault', device: 'temp-1' });
    await stack.stage({ type: 'smoke.alarm', drill: true });
    // both arrive without a reload; the emergency sorts first
    await page.waitForSelector('article.alarm.emergency');
    await page.waitForSelector('article.alarm.hazard');
    const order = await page.$$eval('article.alarm', (els) => els.map((e) => (e as HTMLElement).dataset.category));
    expect(order).toEqual(['emergency', 'hazard']);
    const card = page.locator('article.alarm.emergency');
    await poll(() => card.textContent()).toContain('演练 DRILL');
    expect(await card.textContent()).toContain('感烟探测器报警');
    expect(await card.textContent()).toContain('一号楼');
    expect(await card.getAttribute('class')).toMatch(/fresh/);
    expect(await page.evaluate(() => (window as any).__xiaoanSounds)).toBeGreaterThanOrEqual(2);
    expect(await page.textContent('#banner')).toContain('新告警');
    await screenshot(page, 'desk-alarm-arrived');

    await card.locator('button.act-ack').click();
    await card.locator('textarea').fill('已到场查看，系消防演练');
    await card.locator('button[type=submit]').click();
    await poll(() => card.locator('.state-label').textContent()).toBe('已确认');
    await card.locator('button.act-history').click();
    await poll(() => card.locator('.history').textContent()).toContain('已到场查看，系消防演练');
    await screenshot(page, 'desk-alarm-acknowledged');

    // the other school's desk saw nothing of it
    expect(await other.locator('article.alarm').count()).toBe(0);
    await screenshot(other, 'desk-other-school');
  }, 120_000);

  it('resolves the alarm and filters by state', async () => {
    const card = page.locator('article.alarm.emergency');
    await card.locator('button.act-resolve').click();
    await card.locator('textarea').fill('演练结束');
    await card.locator('button[type=submit]').click();
    await poll(() => page.locator('article.alarm.emergency').count()).toBe(0); // filter "open" hides it
    await page.selectOption('#filter-state', 'resolved');
    await poll(() => page.locator('article.alarm.emergency .state-label').textContent()).toBe('已解除');
    await page.selectOption('#filter-state', 'open');
  }, 120_000);

  it('switches to English', async () => {
    await page.selectOption('#lang', 'en');
    await poll(() => page.textContent('nav')).toContain('Alarms');
    await poll(() => page.textContent('#live')).toBe('Live');
    await stack.stage({ type: 'device.fault', device: 'smoke-1' });
    await poll(() => page.textContent('#banner')).toContain('New alarm · Hazard');
    expect(await page.textContent('#banner')).not.toMatch(/null|DRILL/);
    await poll(() => page.textContent('#page')).toContain('Hazard');
    await screenshot(page, 'desk-english');
    await page.selectOption('#lang', 'zh');
  }, 120_000);
});
