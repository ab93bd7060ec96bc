// Cameras on the real stack and a real ffmpeg: the nearest camera of an alarm, the live stream
// behind the login (never the library's open WebSocket server), one ffmpeg per camera, stopped
// when nobody watches.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Client, startStack } from './testing.ts';
import { createCameraService, nearestCamera } from './cameras.ts';
import { launchBrowser, loginAs, screenshot, poll } from './testing-browser.ts';
import { TEST_PASSWORD } from './testing.ts';

describe('nearestCamera', () => {
  // a camera is what its capabilities say (snapshot), whatever its profile is called
  const d = (deviceId: string, profile: string, building: string | null, room: string | null = null) =>
    ({ gatewayId: 'g', deviceId, orgPath: '37', profile: `model-${deviceId.length}`, building, room, capabilities: profile === 'onvif-camera' ? { snapshot: true } : {} });
  it('prefers the same room, then the same building, then any camera of the gateway', () => {
    const devices = [d('smoke', 'smoke-x', 'A', '301'), d('camB', 'onvif-camera', 'B'), d('camA', 'onvif-camera', 'A', '2F'), d('camA3', 'onvif-camera', 'A', '301')];
    expect(nearestCamera(devices, { gatewayId: 'g', deviceId: 'smoke' })?.deviceId).toBe('camA3');
    expect(nearestCamera(devices.slice(0, 3), { gatewayId: 'g', deviceId: 'smoke' })?.deviceId).toBe('camA');
    expect(nearestCamera([devices[0]!, devices[1]!], { gatewayId: 'g', deviceId: 'smoke' })?.deviceId).toBe('camB');
    expect(nearestCamera([devices[0]!], { gatewayId: 'g', deviceId: 'smoke' })).toBeNull();
  });
});

describe('camera live view', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  let dir: string;
  let fifo: string;
  let producer: ChildProcess;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xiaoan-cam-'));
    fifo = join(dir, 'cam.ts');
    execFileSync('mkfifo', [fifo]);
    startProducer();
    stack = await startStack({ extras: { cameras: createCameraService({ 'gw-3737000001/cam-1': fifo }, { width: 320, height: 240, idleMs: 100 }) } });
  }, 180_000);
  /** A live source: ffmpeg's test pattern in real time into a named pipe (it ends with its reader). */
  function startProducer() {
    producer?.kill('SIGKILL');
    producer = spawn('ffmpeg', ['-loglevel', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=25', '-t', '60', '-f', 'mpegts', '-codec:v', 'mpeg1video', '-y', fifo], { stdio: 'ignore' });
  }
  afterAll(async () => {
    producer?.kill('SIGKILL');
    await stack?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 180_000);

  const wsOpen = (url: string, headers: Record<string, string> = {}) =>
    new Promise<{ ws?: WebSocket; status?: number }>((resolve) => {
      const ws = new WebSocket(url, { headers });
      ws.once('open', () => resolve({ ws }));
      ws.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode }));
      ws.once('error', () => resolve({ status: -1 }));
    });

  it('finds the nearest camera of an alarm and streams it only to those allowed', async () => {
    await stack.stage({ type: 'smoke.alarm' });
    const desk = new Client(stack.server.url);
    await desk.login('desk');
    await poll(async () => (await desk.get('/api/alerts')).body.alerts.length).toBe(1);
    const alert = (await desk.get('/api/alerts')).body.alerts[0];
    const cam = await desk.get(`/api/alerts/${alert.id}/camera`);
    expect(cam.status).toBe(200);
    expect(cam.body.camera).toMatchObject({ deviceId: 'cam-1', building: '一号楼' });
    expect(cam.body.liveUrl).toBe('/api/cameras/gw-3737000001/cam-1/live');
    const wsUrl = stack.server.url.replace('http', 'ws') + cam.body.liveUrl;

    expect((await wsOpen(wsUrl)).status).toBe(401);
    const author = new Client(stack.server.url);
    await author.login('author');
    expect((await wsOpen(wsUrl, { cookie: author.cookie })).status).toBe(403);
    const deskb = new Client(stack.server.url);
    await deskb.login('deskb');
    expect((await wsOpen(wsUrl, { cookie: deskb.cookie })).status).toBe(404);
    expect((await wsOpen(wsUrl, { cookie: desk.cookie, origin: 'http://evil.example' })).status).toBe(403);
    expect((await deskb.get(`/api/alerts/${alert.id}/camera`)).status).toBe(404);

    const a = await wsOpen(wsUrl, { cookie: desk.cookie });
    const b = await wsOpen(wsUrl, { cookie: desk.cookie });
    expect(a.ws && b.ws).toBeTruthy();
    const bytes: Buffer[] = [];
    a.ws!.on('message', (m: Buffer) => bytes.push(m));
    await poll(() => Buffer.concat(bytes).length, { timeout: 15_000 }).toBeGreaterThan(188 * 10);
    const data = Buffer.concat(bytes);
    const sync = data.indexOf(0x47);
    expect(data[sync + 188]).toBe(0x47); // MPEG-TS packets for JSMpeg
    const live = await desk.get('/api/cameras/live');
    expect(live.body.streams).toEqual([{ camera: 'gw-3737000001/cam-1', viewers: 2, pid: expect.any(Number) }]);
    expect(live.body.started).toBe(1); // one ffmpeg for two viewers
    // another school's viewer does not see that this camera is being watched
    expect((await deskb.get('/api/cameras/live')).body).toEqual({ streams: [], started: 0 });
    const pid = live.body.streams[0].pid as number;

    a.ws!.close();
    b.ws!.close();
    await poll(async () => (await desk.get('/api/cameras/live')).body.streams.length, { timeout: 15_000 }).toBe(0);
    await poll(() => { try { process.kill(pid, 0); return 'running'; } catch { return 'stopped'; } }, { timeout: 15_000 }).toBe('stopped');
    const audit = await stack.t.db.query<{ n: number }>("select count(*)::int as n from audit_log where action = 'camera.live' and username = 'desk'");
    expect(audit.rows[0]!.n).toBe(2);
  }, 120_000);

  it('plays the live view in Chromium from the alarm card (JSMpeg, behind the login)', async () => {
    const browser = await launchBrowser();
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, locale: 'zh-CN', timezoneId: 'Asia/Shanghai' });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => { if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text()); });
      await loginAs(page, stack.server.url, 'desk', TEST_PASSWORD);
      startProducer();
      await page.click('article.alarm.emergency button.act-camera');
      await page.waitForSelector('#camera-live');
      await poll(() => page.evaluate(() => (window as any).__xiaoanPlayer?.currentTime ?? 0), { timeout: 20_000 }).toBeGreaterThan(0.5);
      await screenshot(page, 'desk-camera-live');
      expect(errors).toEqual([]);
      await page.click('#camera-close');
      const desk = new Client(stack.server.url);
      await desk.login('desk');
      await poll(async () => (await desk.get('/api/cameras/live')).body.streams.length, { timeout: 15_000 }).toBe(0);
    } finally {
      await browser.close();
    }
  }, 120_000);
});
