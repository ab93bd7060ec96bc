// In Chromium: a rule author opens the rules page, runs a threshold backtest and sees the chart,
// then saves a new threshold with a change note and sees it in the change log.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { startStack, TEST_PASSWORD } from './testing.ts';
import { launchBrowser, loginAs, screenshot, poll } from './testing-browser.ts';

describe('rules page in Chromium', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    stack = await startStack({ rules: true });
    await stack.seedSmokeHistory(2, [0.12, 0.18, 0.25]);
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, locale: 'zh-CN', timezoneId: 'Asia/Shanghai' });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
  }, 180_000);

  it('runs a backtest and shows how many alerts each threshold would have raised', async () => {
    await loginAs(page, stack.server.url, 'author', TEST_PASSWORD);
    await page.click('nav a[data-page=rules]');
    await page.waitForSelector('#rule-select');
    await page.selectOption('#rule-select', 'smoke-sustained');
    await page.fill('#bt-from', '0.1');
    await page.fill('#bt-to', '0.3');
    await page.fill('#bt-step', '0.05');
    await page.fill('#bt-days', '1');
    await page.click('#bt-run');
    await page.waitForSelector('#backtest-chart rect.bar');
    const bars = await page.$$eval('#backtest-chart rect.bar', (els) => els.map((e) => [Number(e.getAttribute('data-value')), Number(e.getAttribute('data-alerts'))]));
    expect(bars).toEqual([[0.1, 3], [0.15, 2], [0.2, 1], [0.25, 0], [0.3, 0]]);
    expect(await page.$$eval('#backtest-chart rect.current', (els) => els.map((e) => e.getAttribute('data-value')))).toEqual(['0.15']);
    await screenshot(page, 'author-backtest');
  }, 120_000);

  it('saves a threshold with a change note', async () => {
    await page.fill('input[name=param-threshold]', '0.2');
    await page.fill('#rule-note', '误报偏多，阈值调至 0.2');
    await page.click('#rule-save');
    await poll(() => page.textContent('#rules-notice')).toContain('已保存 · v1');
    await poll(() => page.textContent('#rule-versions')).toContain('误报偏多，阈值调至 0.2');
    expect(stack.alerting.rules().find((r) => r.id === 'smoke-sustained')!.params.threshold).toBe(0.2);
    await screenshot(page, 'author-saved');
  }, 120_000);
});
