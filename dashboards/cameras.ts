// Cameras: the camera nearest an alarm's device, the snapshot taken at the alarm, and the live
// view. Live video: node-rtsp-stream's MPEG-1 muxer (ffmpeg) is started when the first person
// opens a camera and stopped when the last one leaves. Its own WebSocket server (which listens on
// every interface, with no login) is NOT used: the MPEG-TS bytes go out over a WebSocket on this
// server's port, after the same session check, role check and scope check as every endpoint.

import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import type { Clock, Logger } from '../contract/index.ts';
import type { Scope } from '../ingest/scope.ts';
import type { ApiRouter, RequestContext } from './routes.ts';
import type { ApiDeps, Closer } from './api.ts';
import { alertingError, audit } from './api.ts';
import { ApiError, notFound } from './http.ts';
import { alertIdParams, deviceIdSchema } from './schemas.ts';
import type { DashboardStore } from './types.ts';

const require = createRequire(import.meta.url);

export interface CameraRef {
  gatewayId: string;
  deviceId: string;
}

export interface CameraService {
  /** The ffmpeg input (an rtsp:// URL, or a file for tests) of a camera, or null when it has none. */
  streamUrl(camera: CameraRef): Promise<string | null>;
  /** output size (JSMpeg needs it); default 640x360 */
  width?: number;
  height?: number;
  ffmpegPath?: string;
  /** how long a stream runs on after its last viewer left; default 5 s */
  idleMs?: number;
}

/** A camera service from a fixed map `gatewayId/deviceId → rtsp://…` (configuration or the demo). */
export function createCameraService(streams: Record<string, string>, opts: Partial<Omit<CameraService, 'streamUrl'>> = {}): CameraService {
  return { ...opts, streamUrl: async (c) => streams[`${c.gatewayId}/${c.deviceId}`] ?? null };
}

interface DeviceLike {
  gatewayId: string;
  deviceId: string;
  orgPath: string;
  profile: string;
  name?: string;
  building?: string | null;
  room?: string | null;
  location?: string | null;
  capabilities?: { snapshot?: boolean } | null;
}

/** A camera is a device that declares the snapshot capability (from its profile, via the birth message). */
export const isCamera = (d: { capabilities?: { snapshot?: boolean } | null }) => d.capabilities?.snapshot === true;

/** The camera nearest a device: same room, then same building, then anywhere on the same site. */
export function nearestCamera(devices: DeviceLike[], target: { gatewayId: string; deviceId: string }): DeviceLike | null {
  const dev = devices.find((d) => d.gatewayId === target.gatewayId && d.deviceId === target.deviceId);
  const cams = devices.filter((d) => isCamera(d) && d.gatewayId === target.gatewayId);
  if (!cams.length) return null;
  if (dev && isCamera(dev)) return dev;
  const building = (d: DeviceLike | undefined) => d?.building ?? d?.location ?? null;
  const score = (c: DeviceLike) =>
    (dev && building(c) && building(c) === building(dev) ? 2 : 0) + (dev && c.room && c.room === dev.room && building(c) === building(dev) ? 1 : 0);
  return [...cams].sort((a, b) => score(b) - score(a) || a.deviceId.localeCompare(b.deviceId))[0]!;
}

interface Muxer extends EventEmitter {
  stream: ChildProcess;
}

interface LiveStream {
  key: string;
  muxer: Muxer;
  viewers: Set<WebSocket>;
  idleTimer: unknown;
}

/** Live streams by camera: one ffmpeg per camera however many people watch. */
export function createStreamHub(opts: { clock: Clock; log: Logger; service: CameraService }) {
  const { clock, log, service } = opts;
  const Mpeg1Muxer = require('node-rtsp-stream/mpeg1muxer.js') as new (o: { url: string; ffmpegPath: string; ffmpegOptions: Record<string, string> }) => Muxer;
  const streams = new Map<string, LiveStream>();
  const startedBy = new Map<string, number>();

  function stop(s: LiveStream, why: string) {
    if (streams.get(s.key) !== s) return;
    streams.delete(s.key);
    if (s.idleTimer) clock.clearTimeout(s.idleTimer);
    s.muxer.stream.kill('SIGTERM');
    for (const v of s.viewers) v.close(1001, why.slice(0, 100));
    log.info('camera stream stopped', { camera: s.key, why });
  }

  return {
    async watch(ws: WebSocket, camera: CameraRef, url: string) {
      const key = `${camera.gatewayId}/${camera.deviceId}`;
      let s = streams.get(key);
      if (!s) {
        const w = service.width ?? 640;
        const h = service.height ?? 360;
        const muxer = new Mpeg1Muxer({
          url,
          ffmpegPath: service.ffmpegPath ?? 'ffmpeg',
          // after -i: output options (node-rtsp-stream puts them there); width and height are
          // needed with -loglevel error, else the stream header says 0x0
          ffmpegOptions: { '-loglevel': 'error', '-s': `${w}x${h}`, '-b:v': '900k', '-r': '25', '-bf': '0', '-an': '' },
        });
        startedBy.set(key, (startedBy.get(key) ?? 0) + 1);
        const fresh: LiveStream = { key, muxer, viewers: new Set(), idleTimer: null };
        s = fresh;
        streams.set(key, fresh);
        muxer.on('mpeg1data', (data: Buffer) => {
          for (const v of fresh.viewers) if (v.readyState === 1 && v.bufferedAmount < 4 * 1024 * 1024) v.send(data, { binary: true });
        });
        muxer.on('ffmpegStderr', (d: Buffer) => log.warn('ffmpeg', { camera: key, stderr: d.toString().slice(0, 300) }));
        muxer.stream.on('exit', (code) => stop(fresh, `ffmpeg exited (${code})`));
        muxer.stream.on('error', (e) => {
          log.error('ffmpeg could not start', { camera: key, error: e.message });
          stop(fresh, 'ffmpeg could not start');
        });
        log.info('camera stream started', { camera: key });
      }
      const live = s;
      if (live.idleTimer) {
        clock.clearTimeout(live.idleTimer);
        live.idleTimer = null;
      }
      live.viewers.add(ws);
      ws.on('close', () => {
        live.viewers.delete(ws);
        if (live.viewers.size === 0 && !live.idleTimer) {
          live.idleTimer = clock.setTimeout(() => stop(live, 'nobody watches'), service.idleMs ?? 5000);
        }
      });
    },
    /** cameras streaming now, with their viewer counts */
    active: () => [...streams.values()].map((s) => ({ camera: s.key, viewers: s.viewers.size, pid: s.muxer.stream.pid })),
    /** ffmpeg processes started so far, for the cameras `counted` accepts */
    started: (counted: (camera: string) => boolean) => [...startedBy].reduce((n, [k, v]) => n + (counted(k) ? v : 0), 0),
    /** cameras that have streamed since the server started */
    streamed: () => [...startedBy.keys()],
    close() {
      for (const s of [...streams.values()]) stop(s, 'server stopping');
    },
  };
}

export async function registerCameraApi(api: ApiRouter, deps: ApiDeps): Promise<Closer[]> {
  const store: DashboardStore = deps.store;
  const service = deps.extras.cameras;
  const alerting = deps.alerting as ApiDeps['alerting'] & {
    attachments?(scope: Scope, id: string): Promise<{ id: number; kind: string; mime: string; deviceId: string | null; createdAt: number; data: Buffer }[]>;
  };

  // The JSMpeg player for the browser, served from its package (no copy in the repository).
  api.route('GET', '/api/vendor/jsmpeg.js', { permission: null, scope: 'public', summary: 'The JSMpeg player for the live view' }, async (ctx) => {
    const { readFile } = await import('node:fs/promises');
    // the package's exports map hides the UMD build; it sits beside the CommonJS entry
    const { dirname, join } = await import('node:path');
    const file = join(dirname(require.resolve('@cycjimmy/jsmpeg-player')), 'jsmpeg-player.umd.min.js');
    const body = await readFile(file);
    ctx.reply.code(200).headers({ 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'public, max-age=86400' }).send(body);
  });

  async function cameraInScope(scope: Scope, gatewayId: string, deviceId: string): Promise<DeviceLike | null> {
    const list = (await store.queries.listDevices(scope, { gatewayId, deviceId })) as DeviceLike[];
    const d = list.find((x) => x.gatewayId === gatewayId && x.deviceId === deviceId);
    return d && isCamera(d) ? d : null;
  }

  api.route('GET', '/api/alerts/:id/camera', { permission: 'cameras.view', scope: 'org-subtree', summary: "The camera nearest an alert's device, its snapshots and live view", params: alertIdParams }, async (ctx, { id }) => {
    const scope = ctx.principal.scope;
    const alert = (await alerting.get(scope, id!).catch(alertingError)) as { gatewayId: string; deviceId: string; orgPath: string } | null;
    if (!alert) throw notFound('告警不存在或不在您的管辖范围内', 'alert not found or outside your scope');
    const devices = (await store.queries.listDevices(scope, { gatewayId: alert.gatewayId })) as DeviceLike[];
    const cam = nearestCamera(devices, alert);
    const snaps = alerting.attachments ? (await alerting.attachments(scope, id!).catch(() => [])).filter((a) => a.mime.startsWith('image/')) : [];
    const live = cam && service ? (await service.streamUrl(cam)) !== null : false;
    ctx.send(200, {
      camera: cam ? { gatewayId: cam.gatewayId, deviceId: cam.deviceId, name: cam.name ?? cam.deviceId, building: cam.building ?? cam.location ?? null, room: cam.room ?? null } : null,
      snapshots: snaps.map((s) => ({ id: s.id, deviceId: s.deviceId, createdAt: s.createdAt, url: `/api/alerts/${encodeURIComponent(id!)}/snapshot/${s.id}` })),
      live,
      liveUrl: cam && live ? `/api/cameras/${encodeURIComponent(cam.gatewayId)}/${encodeURIComponent(cam.deviceId)}/live` : null,
    });
  });

  api.route('GET', '/api/alerts/:id/snapshot/:snap', { permission: 'cameras.view', scope: 'org-subtree', summary: 'A snapshot taken at the alarm (audited)', params: z.object({ id: z.string().min(1).max(100), snap: z.string().regex(/^\d{1,18}$/) }) }, async (ctx, { id, snap }) => {
    if (!alerting.attachments) throw notFound('没有抓拍', 'no snapshot');
    const list = await alerting.attachments(ctx.principal.scope, id!).catch(alertingError);
    const s = list.find((a) => String(a.id) === snap && a.mime.startsWith('image/'));
    if (!s) throw notFound('没有抓拍', 'no snapshot');
    await audit(api, ctx, 'camera.snapshot', `${id}/${snap}`, null, { device: s.deviceId });
    ctx.reply.code(200).headers({ 'content-type': s.mime, 'cache-control': 'private, no-store' }).send(s.data);
  });

  if (!service) return [];

  const hub = createStreamHub({ clock: api.clock, log: api.log.child('cameras'), service });
  const open = { bySession: new Map<string, number>(), byUser: new Map<string, number>() };
  const bump = (m: Map<string, number>, k: string, d: number) => {
    const n = (m.get(k) ?? 0) + d;
    if (n > 0) m.set(k, n);
    else m.delete(k);
  };

  // Only the streams of cameras inside the reader's subtree (other schools' live views stay unseen).
  api.route('GET', '/api/cameras/live', { permission: 'cameras.view', scope: 'org-subtree', summary: 'Camera live streams running now in your subtree, with viewer counts' }, async (ctx) => {
    const active = hub.active();
    const visible = new Set<string>();
    for (const g of new Set([...active.map((a) => a.camera), ...hub.streamed()].map((c) => c.split('/')[0]!))) {
      const devices = (await store.queries.listDevices(ctx.principal.scope, { gatewayId: g })) as DeviceLike[];
      for (const d of devices) if (isCamera(d)) visible.add(`${d.gatewayId}/${d.deviceId}`);
    }
    ctx.send(200, { streams: active.filter((a) => visible.has(a.camera)), started: hub.started((c) => visible.has(c)) });
  });

  api.socket<{ cam: DeviceLike; url: string }>('/api/cameras/:gatewayId/:deviceId/live', {
    permission: 'cameras.view',
    scope: 'org-subtree',
    summary: 'Live view (WebSocket, MPEG-TS): a camera of your subtree; limited per session and per user; audited',
    params: z.object({ gatewayId: deviceIdSchema, deviceId: deviceIdSchema }),
    async check(ctx: RequestContext, { gatewayId, deviceId }) {
      const cam = await cameraInScope(ctx.principal.scope, gatewayId!, deviceId!);
      const url = cam ? await service.streamUrl(cam) : null;
      if (!cam || !url) throw notFound('摄像机不存在或不在您的管辖范围内', 'camera not found or outside your scope');
      const { camerasPerSession: perSession, camerasPerUser: perUser } = api.limits;
      if ((open.bySession.get(ctx.token) ?? 0) >= perSession || (open.byUser.get(ctx.principal.user.username) ?? 0) >= perUser) {
        throw new ApiError(429, 'too_many_streams', {
          zh: `实时视频连接过多（每个会话最多 ${perSession} 路、每个用户最多 ${perUser} 路）；请关闭其他画面后重试`,
          en: `too many live views open (at most ${perSession} per session and ${perUser} per user); close another view and retry`,
        });
      }
      await audit(api, ctx, 'camera.live', `${gatewayId}/${deviceId}`, cam.orgPath);
      return { cam, url };
    },
    open(ws, ctx, { cam, url }) {
      const user = ctx.principal.user.username;
      bump(open.bySession, ctx.token, 1);
      bump(open.byUser, user, 1);
      ws.on('message', () => {}); // viewers only receive
      // A view ends with its session (logout, expiry).
      const check = api.clock.setInterval(() => {
        api.sessions.lookup(ctx.token).then((s) => { if (!s) ws.close(4001, 'session ended'); }, () => {});
      }, 15_000);
      ws.on('close', () => {
        api.clock.clearInterval(check);
        bump(open.bySession, ctx.token, -1);
        bump(open.byUser, user, -1);
      });
      hub.watch(ws, cam, url).catch((e) => {
        api.log.error('camera stream failed', { camera: `${cam.gatewayId}/${cam.deviceId}`, error: (e as Error).message });
        ws.close(1011, 'stream failed');
      });
    },
  });

  return [
    async () => {
      hub.close();
    },
  ];
}
