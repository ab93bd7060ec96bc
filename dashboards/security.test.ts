// HTTP security limits on the real stack: login throttling counted before the password hash (so
// concurrent guesses cannot all be checked) without letting a stranger lock a user out, and the
// number of live streams (SSE and camera WebSocket) per session and per user.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createCameraService } from './cameras.ts';
import { Client, startStack, TEST_PASSWORD } from './testing.ts';

describe('HTTP limits', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  let dir: string;
  beforeAll(async () => {
    // a stand-in ffmpeg that keeps a stream "running" without video: the limits are what is tested
    dir = await mkdtemp(join(tmpdir(), 'xiaoan-sec-'));
    const ffmpeg = join(dir, 'ffmpeg');
    await writeFile(ffmpeg, '#!/bin/sh\nexec sleep 60\n');
    await chmod(ffmpeg, 0o755);
    stack = await startStack({
      extras: { cameras: createCameraService({ 'gw-3737000001/cam-1': '/dev/null', 'gw-3737000001/cam-2': '/dev/null' }, { ffmpegPath: ffmpeg, idleMs: 50 }) },
      server: { loginLimit: { maxFailures: 5 }, liveLimits: { streamsPerSession: 2, streamsPerUser: 3, camerasPerSession: 1, camerasPerUser: 2 } },
    });
  }, 180_000);
  afterAll(async () => {
    await stack?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const login = (username: string, password: string, remoteAddress: string) =>
    stack.server.inject({ method: 'POST', url: '/api/login', remoteAddress, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ username, password }) });

  it('checks at most the allowed number of 40 concurrent wrong passwords; the user still logs in from elsewhere', async () => {
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => login('desk', `wrong-password-${i}`, '10.9.0.1')));
    const statuses = answers.map((a) => a.statusCode);
    // 401 = the hash was checked; 429 = refused before it
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(5);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(35);
    expect(statuses.every((s) => s === 401 || s === 429)).toBe(true);
    const refused = answers.find((a) => a.statusCode === 429)!;
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    expect(refused.json().error).toMatchObject({ code: 'too_many_attempts', message: { zh: expect.any(String), en: expect.any(String) } });
    const failures = await stack.t.db.query<{ n: number }>("select count(*)::int as n from audit_log where action = 'login.failed' and target = 'desk'");
    expect(failures.rows[0]!.n).toBeLessThanOrEqual(5);
    // the attacker's address stays throttled, even with the right password…
    expect((await login('desk', TEST_PASSWORD, '10.9.0.1')).statusCode).toBe(429);
    // …but the real user from their own address is not locked out
    expect((await login('desk', TEST_PASSWORD, '10.9.0.2')).statusCode).toBe(200);
  });

  it('limits body sizes per route: 8 KiB for a login, 1 MiB for a CSV import', async () => {
    const big = await login('desk', 'x'.repeat(9 * 1024), '10.9.0.9');
    expect(big.statusCode).toBe(413);
    expect(big.json().error).toMatchObject({ code: 'body_too_large', message: { zh: expect.any(String), en: expect.any(String) } });
    const tech = new Client(stack.server.url);
    await tech.login('tech');
    const csv = 'id,profile,url\n' + 'x-1,temp-humidity-generic,modbus-tcp://127.0.0.1:1502\n'.repeat(5000); // ~270 KB: over the default, under the import's
    const desk = new Client(stack.server.url);
    await desk.login('deskb');
    expect((await desk.post('/api/alerts/1/ack', { comment: csv })).status).toBe(413);
    expect((await tech.post('/api/gateways/gw-3737000001/import', { csv })).status).not.toBe(413);
  });

  it('slows one address guessing many users', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 24; i++) statuses.push((await login(`nobody-${i}`, 'wrong-password', '10.9.0.3')).statusCode);
    expect(statuses.slice(0, 20).every((s) => s === 401)).toBe(true);
    expect(statuses.slice(20).every((s) => s === 429)).toBe(true);
    expect((await login('tech', TEST_PASSWORD, '10.9.0.4')).statusCode).toBe(200);
  });

  it('limits live streams per session and per user', async () => {
    const a = new Client(stack.server.url);
    await a.login('deskb');
    const b = new Client(stack.server.url);
    await b.login('deskb');
    const open: AbortController[] = [];
    const stream = async (c: Client) => {
      const ctrl = new AbortController();
      const r = await fetch(stack.server.url + '/api/stream', { headers: { cookie: c.cookie }, signal: ctrl.signal });
      if (r.status === 200) {
        open.push(ctrl);
        return { status: r.status, body: null };
      }
      return { status: r.status, body: await r.json() };
    };
    expect((await stream(a)).status).toBe(200);
    expect((await stream(a)).status).toBe(200);
    const third = await stream(a);
    expect(third.status).toBe(429); // per session
    expect(third.body.error.code).toBe('too_many_streams');
    expect((await stream(b)).status).toBe(200);
    expect((await stream(b)).status).toBe(429); // per user: three in all
    open.shift()!.abort();
    await expect.poll(async () => (await stream(b)).status, { timeout: 5000 }).toBe(200);
    for (const c of open) c.abort();
  });

  it('limits camera live views per session and per user', async () => {
    const base = stack.server.url.replace('http', 'ws');
    const ws = (cookie: string, cam: string) =>
      new Promise<{ ws?: WebSocket; status?: number }>((resolve) => {
        const s = new WebSocket(`${base}/api/cameras/gw-3737000001/${cam}/live`, { headers: { cookie } });
        s.once('open', () => resolve({ ws: s }));
        s.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode }));
        s.once('error', () => resolve({ status: -1 }));
      });
    const a = new Client(stack.server.url);
    await a.login('desk', TEST_PASSWORD);
    const b = new Client(stack.server.url);
    await b.login('desk', TEST_PASSWORD);
    const first = await ws(a.cookie, 'cam-1');
    expect(first.ws).toBeTruthy();
    expect((await ws(a.cookie, 'cam-2')).status).toBe(429); // one per session
    const second = await ws(b.cookie, 'cam-2');
    expect(second.ws).toBeTruthy();
    const c = new Client(stack.server.url);
    await c.login('desk', TEST_PASSWORD);
    expect((await ws(c.cookie, 'cam-1')).status).toBe(429); // two per user
    first.ws!.close();
    await expect.poll(async () => { const r = await ws(c.cookie, 'cam-1'); r.ws?.close(); return r.ws ? 'open' : r.status; }, { timeout: 5000 }).toBe('open');
    second.ws!.close();
  });
});
