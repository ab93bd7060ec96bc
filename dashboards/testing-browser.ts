// Real Chromium (Debian's) through playwright-core, for the dashboards' browser tests.
import { mkdir } from 'node:fs/promises';
import { chromium, type Browser, type Page } from 'playwright-core';
import { expect } from 'vitest';

/** expect.poll with a patience fit for a loaded 2-core machine (the default is 1 s). */
export function poll<T>(fn: () => T | Promise<T>, opts: { timeout?: number; intervals?: number[] } = {}) {
  return expect.poll(fn, { timeout: opts.timeout ?? 20_000, interval: 100, ...(opts.intervals ? { intervals: opts.intervals } : {}) });
}

export const ARTIFACTS = new URL('../test-artifacts/', import.meta.url).pathname;

export async function launchBrowser(): Promise<Browser> {
  await mkdir(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: process.env.XIAOAN_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--autoplay-policy=no-user-gesture-required'],
  });
}

export async function screenshot(page: Page, name: string) {
  await page.screenshot({ path: `${ARTIFACTS}${name}.png`, fullPage: true });
}

/** Log in through the page's form, as a person does. */
export async function loginAs(page: Page, base: string, username: string, password: string) {
  await page.goto(base + '/');
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#login-submit');
  await page.waitForSelector('#nav:not([hidden])');
}
