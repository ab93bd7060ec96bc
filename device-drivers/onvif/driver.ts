// ONVIF cameras through the `onvif` package, behind defences a campus network needs: every HTTP
// answer is size-capped at the socket, every call has a total deadline (a camera that drips a
// byte at a time is cut off), every answer's shape is checked before use, and exceptions the
// package raises inside its own callbacks are caught there. A failing camera is marked offline
// and retried with backoff; nothing escapes to the gateway.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import onvif from 'onvif';
import { z } from 'zod';
import type { DeviceDriver, DeviceSpec, DriverContext, Observation } from '../types.ts';
import { DriverError } from '../types.ts';
import type { OnvifProfile } from '../profile-schema.ts';
import { ALARM_EVENT_TYPES } from '../profile-schema.ts';
import { HealthTracker, asDriverError } from '../health.ts';

/** Largest SOAP answer accepted from a camera. */
export const MAX_ONVIF_RESPONSE = 1024 * 1024;
/** Largest snapshot accepted. */
export const MAX_SNAPSHOT = 8 * 1024 * 1024;

export interface OnvifAddress {
  host: string;
  port: number;
  username: string;
  password: string;
  path: string;
}

export function parseOnvifUrl(url: string): OnvifAddress {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new DriverError(`设备地址无效 invalid device URL: write onvif://USER:PASS@HOST:PORT`, 'bad_url', false);
  }
  if (u.protocol !== 'onvif:' || !u.hostname) throw new DriverError(`设备地址无效 invalid device URL: write onvif://USER:PASS@HOST:PORT`, 'bad_url', false);
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port ? Number(u.port) : 80,
    username: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    path: u.pathname && u.pathname !== '/' ? u.pathname : '/onvif/device_service',
  };
}

export interface CameraInfo {
  manufacturer: string;
  model: string;
  firmware: string;
  serial: string;
  profiles: Array<{ token: string; name: string; encoding?: string; width?: number; height?: number }>;
  streamUri: string | null;
  snapshotUri: string | null;
}

export interface OnvifDriver extends DeviceDriver {
  /** what the camera told us when we last connected (connects if needed) */
  describe(): Promise<CameraInfo>;
  /** fetch one snapshot (JPEG bytes), size-capped */
  snapshot(): Promise<Buffer>;
}

const TOO_LARGE = 'ONVIF_RESPONSE_TOO_LARGE';

/** An http.Agent whose sockets die as soon as an answer passes `cap` bytes, and can all be cut at once. */
class GuardedAgent extends http.Agent {
  readonly sockets_ = new Set<net.Socket>();
  constructor(private readonly cap: number) {
    super({ keepAlive: false, maxSockets: 4 });
  }
  override createConnection(options: net.NetConnectOpts, cb?: (err: Error | null, s: net.Socket) => void): net.Socket {
    const s = net.createConnection(options);
    let n = 0;
    this.sockets_.add(s);
    s.on('close', () => this.sockets_.delete(s));
    s.on('data', (d: Buffer) => {
      n += d.length;
      if (n > this.cap) s.destroy(Object.assign(new Error(`answer larger than ${this.cap} bytes`), { code: TOO_LARGE }));
    });
    void cb;
    return s;
  }
  cutAll(): void {
    for (const s of this.sockets_) s.destroy(Object.assign(new Error('deadline passed'), { code: 'ETIMEDOUT' }));
  }
}

function classify(e: unknown, where: string): DriverError {
  if (e instanceof DriverError) return e;
  const err = e as Error & { code?: string };
  const msg = String(err?.message ?? e);
  if (err?.code === TOO_LARGE) return new DriverError(`摄像机应答过大 answer from ${where} exceeds ${MAX_ONVIF_RESPONSE} bytes; refused`, 'response_too_large', false);
  if (err?.code === 'ETIMEDOUT' || /Network timeout/.test(msg)) return new DriverError(`超时 timeout: ${where} did not answer in time`, 'timeout', true);
  if (/NotAuthorized|not authorized|Digest authentication failed|Unauthorized/i.test(msg))
    return new DriverError(`用户名或密码错误 wrong credentials for ${where}`, 'unauthorized', false, 401);
  if (/DOCTYPE|ENTITY|Wrong ONVIF SOAP response|Non-whitespace|Unexpected close tag|Unclosed root|Invalid character|Text data outside/i.test(msg))
    return new DriverError(`摄像机应答无效 ${where} sent an answer that is not valid ONVIF SOAP (${msg.split('\n')[0]!.slice(0, 120)})`, 'bad_response', true);
  if (err instanceof TypeError || /Cannot read|undefined|not a function|Unrecognized configuration/.test(msg))
    return new DriverError(`摄像机应答结构不符 ${where} answered in an unexpected shape (${msg.slice(0, 120)})`, 'bad_response', true);
  if (/ONVIF SOAP Fault/.test(msg)) return new DriverError(`摄像机返回错误 ${where}: ${msg.slice(0, 200)}`, 'soap_fault', true);
  const d = asDriverError(e);
  return new DriverError(`${d.message} (${where})`, d.code, d.retryable, d.protocolCode);
}

const str = z.union([z.string(), z.number()]).transform(String);
const deviceInfoSchema = z.object({ manufacturer: str, model: str, firmwareVersion: str.optional(), serialNumber: str.optional() });
const profileSchema = z.object({
  $: z.object({ token: z.string().min(1).max(64) }),
  name: str.optional(),
  videoEncoderConfiguration: z
    .object({ encoding: str.optional(), resolution: z.object({ width: z.number(), height: z.number() }).optional() })
    .optional(),
});
const mediaUriSchema = z.object({ uri: z.string().max(2048).regex(/^(rtsp|rtsps|http|https):\/\//, 'uri must be rtsp:// or http(s)://') });
const simpleItem = z.object({ $: z.object({ Name: z.string(), Value: z.union([z.string(), z.number(), z.boolean()]) }) });
const notificationSchema = z.object({
  topic: z.object({ _: z.string().max(256) }),
  message: z.object({
    message: z.object({
      $: z.object({ UtcTime: z.union([z.string(), z.date()]).optional(), PropertyOperation: z.string().optional() }).optional(),
      source: z.object({ simpleItem: z.union([simpleItem, z.array(simpleItem)]) }).optional(),
      data: z.object({ simpleItem: z.union([simpleItem, z.array(simpleItem)]) }).optional(),
    }),
  }),
});

const pullResponseSchema = z.object({ currentTime: z.union([z.string(), z.date()]), terminationTime: z.union([z.string(), z.date()]) });

function items(x: unknown): Record<string, string> {
  const arr = x === undefined ? [] : Array.isArray(x) ? x : [x];
  const out: Record<string, string> = Object.create(null);
  for (const it of arr as Array<z.infer<typeof simpleItem>>) {
    const k = it.$.Name;
    if (k === '__proto__' || k === 'constructor' || k === 'prototype') continue;
    out[k] = String(it.$.Value);
  }
  return out;
}

/** Topic without namespace prefixes: `tns1:RuleEngine/tnsx:Foo/Motion` → `RuleEngine/Foo/Motion`. */
export function normaliseTopic(t: string): string {
  return t.trim().split('/').map((p) => p.replace(/^[\w.-]+:/, '')).join('/');
}

type Cam = InstanceType<typeof onvif.Cam> & Record<string, any>;

export async function createOnvifDriver(spec: DeviceSpec, profile: OnvifProfile, ctx: DriverContext, opts: { callTimeoutMs?: number; backoffBaseMs?: number } = {}): Promise<OnvifDriver> {
  const addr = parseOnvifUrl(spec.url);
  const where = `camera ${addr.host}:${addr.port}`;
  const log = ctx.log.child(`onvif:${spec.id}`);
  const health = new HealthTracker(ctx.clock);
  const callTimeout = opts.callTimeoutMs ?? 8000;
  const backoffBase = opts.backoffBaseMs ?? 5000;
  let cam: Cam | null = null;
  let agent: GuardedAgent | null = null;
  let info: CameraInfo | null = null;
  let failures = 0;
  let retryAt = 0;
  let closed = false;
  let connecting: Promise<CameraInfo> | null = null;
  let listener: ((o: Observation) => void) | null = null;
  let loopRunning = false;
  let loopTimer: unknown = null;
  const states = new Map<string, boolean>();
  /** bumped when a connection is given up: answers from an older one must not count as health */
  let generation = 0;

  function newCam(): Cam {
    agent?.cutAll();
    agent = new GuardedAgent(MAX_ONVIF_RESPONSE);
    const c = new onvif.Cam({
      hostname: addr.host,
      port: addr.port,
      path: addr.path,
      username: addr.username || undefined,
      password: addr.password || undefined,
      timeout: callTimeout,
      autoconnect: false,
      // service addresses come from the camera; never let it send us to another host
      preserveAddress: true,
      agent,
    }) as Cam;
    c.on('error', (e: unknown) => log.debug('camera emitted error', { error: String(e) }));
    c.on('warning', (w: unknown) => log.debug('camera warning', { warning: String(w) }));
    // The package parses inside its HTTP callbacks and can throw there, outside any promise:
    // catch it at the source and hand the library an error instead.
    const request = c._request.bind(c);
    c._request = (options: unknown, callback: (...a: unknown[]) => void) =>
      request(options, (...args: unknown[]) => {
        try {
          callback(...args);
        } catch (e) {
          try {
            callback(e instanceof Error ? e : new Error(String(e)));
          } catch {
            /* the library's own error path threw as well; the deadline reports it */
          }
        }
      });
    return c;
  }

  /** Run one callback-style camera call with a total deadline; settles exactly once. */
  function call<T>(fn: (cb: (err: unknown, res?: T) => void) => void, what: string, deadline = callTimeout): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const h = ctx.clock.setTimeout(() => {
        if (done) return;
        done = true;
        agent?.cutAll();
        reject(new DriverError(`超时 timeout: ${where} did not finish ${what} within ${deadline} ms`, 'timeout', true));
      }, deadline);
      try {
        fn((err, res) => {
          if (done) return;
          done = true;
          ctx.clock.clearTimeout(h);
          if (err) reject(classify(err, where));
          else resolve(res as T);
        });
      } catch (e) {
        if (!done) {
          done = true;
          ctx.clock.clearTimeout(h);
          reject(classify(e, where));
        }
      }
    });
  }

  async function connect(): Promise<CameraInfo> {
    const c = newCam();
    await call<void>((cb) => c.connect((err: unknown) => cb(err)), 'connect');
    const di = deviceInfoSchema.safeParse(await call((cb) => c.getDeviceInformation((e: unknown, r: unknown) => cb(e, r)), 'GetDeviceInformation'));
    if (!di.success) throw new DriverError(`摄像机应答结构不符 ${where}: GetDeviceInformation answer has an unexpected shape`, 'bad_response', true);
    const rawProfiles = Array.isArray(c.profiles) ? c.profiles : [];
    const profiles: CameraInfo['profiles'] = [];
    for (const p of rawProfiles) {
      const r = profileSchema.safeParse(p);
      if (!r.success) continue;
      const enc = r.data.videoEncoderConfiguration;
      profiles.push({ token: r.data.$.token, name: r.data.name ?? r.data.$.token, encoding: enc?.encoding, width: enc?.resolution?.width, height: enc?.resolution?.height });
    }
    if (!profiles.length) throw new DriverError(`摄像机无媒体配置 ${where} reports no usable media profile`, 'bad_response', true);
    const token = profiles[0]!.token;
    const stream = mediaUriSchema.safeParse(await call((cb) => c.getStreamUri({ protocol: 'RTSP', profileToken: token }, (e: unknown, r: unknown) => cb(e, r)), 'GetStreamUri').catch(() => null));
    const snap = profile.onvif.snapshot
      ? mediaUriSchema.safeParse(await call((cb) => c.getSnapshotUri({ profileToken: token }, (e: unknown, r: unknown) => cb(e, r)), 'GetSnapshotUri').catch(() => null))
      : null;
    cam = c;
    return {
      manufacturer: di.data.manufacturer.slice(0, 100),
      model: di.data.model.slice(0, 100),
      firmware: (di.data.firmwareVersion ?? '').slice(0, 100),
      serial: (di.data.serialNumber ?? '').slice(0, 100),
      profiles,
      streamUri: stream.success ? stream.data.uri : null,
      snapshotUri: snap?.success ? snap.data.uri : null,
    };
  }

  function fail(err: DriverError): void {
    generation++;
    failures++;
    retryAt = ctx.clock.now() + Math.min(backoffBase * 2 ** (failures - 1), 300_000);
    const was = health.snapshot().state;
    health.failed(err);
    if (err.code === 'unauthorized') {
      // retrying wrong credentials only locks the account on many cameras: offline at once
      for (let i = 0; i < 3; i++) health.failed(err);
    }
    if (was !== 'offline' && health.snapshot().state === 'offline') log.warn('camera offline', { error: err.message });
    cam = null;
    info = null;
  }

  async function ensureConnected(): Promise<CameraInfo> {
    if (info && cam) return info;
    if (connecting) return connecting;
    if (ctx.clock.now() < retryAt) throw new DriverError(`摄像机离线，稍后重试 ${where} is offline; next try in ${Math.ceil((retryAt - ctx.clock.now()) / 1000)} s`, 'backoff', true);
    connecting = connect().then(
      (i) => {
        info = i;
        failures = 0;
        retryAt = 0;
        health.ok();
        return i;
      },
      (e) => {
        const err = classify(e, where);
        fail(err);
        throw err;
      },
    );
    try {
      return await connecting;
    } finally {
      connecting = null;
    }
  }

  function emit(o: Observation): void {
    try {
      listener?.(o);
    } catch (e) {
      log.error('observation listener failed', { error: e });
    }
  }

  function handleNotifications(data: unknown): void {
    const raw = (data as { notificationMessage?: unknown } | undefined)?.notificationMessage;
    const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
    for (const n of list.slice(0, 100)) {
      const r = notificationSchema.safeParse(n);
      if (!r.success) {
        health.partial(new DriverError(`摄像机事件结构不符 ${where} sent an event in an unexpected shape`, 'bad_response', true));
        continue;
      }
      const topic = normaliseTopic(r.data.topic._);
      const rule = profile.onvif.events.find((e) => normaliseTopic(e.topic) === topic);
      if (!rule) continue;
      const msg = r.data.message.message;
      const d = items(msg.data?.simpleItem);
      const src = items(msg.source?.simpleItem);
      const t = msg.$?.UtcTime ? new Date(msg.$.UtcTime).getTime() : NaN;
      const ts = Number.isFinite(t) && Math.abs(t - ctx.clock.now()) < 86_400_000 ? t : ctx.clock.now();
      const data2: Record<string, unknown> = { topic, ...(src.VideoSourceConfigurationToken ? { source: src.VideoSourceConfigurationToken.slice(0, 64) } : {}), ...(src.Rule ? { rule: src.Rule.slice(0, 64) } : {}) };
      const priority = rule.priority ?? (ALARM_EVENT_TYPES.has(rule.type) ? 'alarm' : 'normal');
      if (rule.stateItem) {
        const v = d[rule.stateItem];
        const on = v === 'true' || v === '1';
        const key = `${topic}|${data2.source ?? ''}`;
        const before = states.get(key);
        states.set(key, on);
        // a state topic fires when it turns true, not on every repetition or when it clears
        if (on && before !== true) emit({ kind: 'event', type: rule.type, ts, priority, data: data2 });
      } else emit({ kind: 'event', type: rule.type, ts, priority, data: data2 });
    }
  }

  /** PullPoint loop (ONVIF Core §9.1.2): create, pull, renew at half the lifetime, re-create after a failure. */
  async function eventLoop(): Promise<void> {
    if (loopRunning) return;
    loopRunning = true;
    let renewAt = 0;
    let subscribed = false;
    while (!closed && listener) {
      try {
        await ensureConnected();
        const c = cam!;
        log.debug('event loop step', { subscribed, renewIn: renewAt - ctx.clock.now() });
        if (!subscribed) {
          const sub = await call<Record<string, any>>((cb) => c.createPullPointSubscription((e: unknown, r: unknown) => cb(e, r as Record<string, any>)), 'CreatePullPointSubscription');
          const cur = new Date(sub?.currentTime).getTime();
          const term = new Date(sub?.terminationTime).getTime();
          const ttl = Number.isFinite(cur) && Number.isFinite(term) && term > cur ? term - cur : profile.onvif.subscriptionTtl;
          renewAt = ctx.clock.now() + ttl / 2;
          subscribed = true;
        }
        if (ctx.clock.now() >= renewAt) {
          await call((cb) => c.renew({}, (e: unknown, r: unknown) => cb(e, r)), 'Renew');
          renewAt = ctx.clock.now() + profile.onvif.subscriptionTtl / 2;
        }
        // the camera may hold a PullMessages up to a minute (ONVIF Core §9.1.2); allow for it
        const gen = generation;
        const res = await call((cb) => c.pullMessages({ messageLimit: 50 }, (e: unknown, r: unknown) => cb(e, r)), 'PullMessages', 75_000);
        if (gen !== generation) {
          // the connection was given up while this pull waited (e.g. a failed poll): start over
          subscribed = false;
          continue;
        }
        // ONVIF Events WSDL: a PullMessagesResponse always carries CurrentTime and TerminationTime
        if (!pullResponseSchema.safeParse(res).success) throw new DriverError(`摄像机应答结构不符 ${where}: PullMessages answer has an unexpected shape`, 'bad_response', true);
        health.ok();
        handleNotifications(res);
      } catch (e) {
        if (closed) break;
        const err = classify(e, where);
        if (err.code !== 'backoff') fail(err);
        subscribed = false;
        await new Promise<void>((r) => {
          loopTimer = ctx.clock.setTimeout(r, Math.max(500, Math.min(retryAt - ctx.clock.now(), 300_000)));
        });
      }
    }
    loopRunning = false;
  }

  const driver: OnvifDriver = {
    spec,
    health: () => health.snapshot(),
    async poll() {
      if (closed) return [];
      try {
        if (info && cam) {
          // liveness: one cheap authenticated call
          const c = cam;
          const gen = generation;
          await call((cb) => c.getDeviceInformation((e: unknown, r: unknown) => cb(e, r)), 'GetDeviceInformation');
          if (gen === generation) health.ok();
        } else await ensureConnected();
        // a camera has no measured values; `online` gives the edge something to report at integrity time
        return [{ kind: 'reading', metric: 'online', value: 1, ts: ctx.clock.now(), quality: 'good' }];
      } catch (e) {
        const err = classify(e, where);
        if (err.code !== 'backoff' && (info || cam)) fail(err);
        else if (err.code === 'backoff') health.failed(err);
        return [];
      }
    },
    async subscribe(onObservation) {
      listener = onObservation;
      void eventLoop().catch((e) => log.error('event loop stopped', { error: e }));
    },
    async describe() {
      return ensureConnected();
    },
    async snapshot() {
      const i = await ensureConnected();
      if (!i.snapshotUri) throw new DriverError(`${where} has no snapshot URI`, 'not_supported', false);
      return fetchCapped(i.snapshotUri, addr, callTimeout, ctx);
    },
    async write(point) {
      throw new DriverError(`点位不可写 point "${point}" is not writable on ${profile.id}; cameras have no writable points`, 'not_writable', false);
    },
    async close() {
      closed = true;
      listener = null;
      if (loopTimer) ctx.clock.clearTimeout(loopTimer);
      const c = cam;
      cam = null;
      if (c?.events?.subscription) await call((cb) => c.unsubscribe((e: unknown) => cb(e)), 'Unsubscribe', 2000).catch(() => {});
      agent?.cutAll();
      agent?.destroy();
    },
  };
  return driver;
}

/** RFC 7616 Digest answer (MD5, qop=auth) for a GET, as cameras ask for their snapshot URLs. */
function digestAuthorization(challenge: string, addr: OnvifAddress, path: string): string | null {
  const params: Record<string, string> = {};
  for (const m of challenge.replace(/^Digest\s+/i, '').matchAll(/(\w+)=(?:"([^"]*)"|([^,\s]*))/g)) params[m[1]!.toLowerCase()] = m[2] ?? m[3] ?? '';
  const algorithm = (params.algorithm ?? 'MD5').toUpperCase();
  if (!params.nonce || !params.realm || (algorithm !== 'MD5' && algorithm !== 'SHA-256')) return null;
  const h = (v: string) => createHash(algorithm === 'MD5' ? 'md5' : 'sha256').update(v).digest('hex');
  const ha1 = h(`${addr.username}:${params.realm}:${addr.password}`);
  const ha2 = h(`GET:${path}`);
  const qop = params.qop?.split(',').map((q) => q.trim()).includes('auth') ? 'auth' : undefined;
  const cnonce = randomBytes(8).toString('hex');
  const nc = '00000001';
  const response = qop ? h(`${ha1}:${params.nonce}:${nc}:${cnonce}:${qop}:${ha2}`) : h(`${ha1}:${params.nonce}:${ha2}`);
  const parts = [`username="${addr.username}"`, `realm="${params.realm}"`, `nonce="${params.nonce}"`, `uri="${path}"`, `algorithm=${algorithm}`, `response="${response}"`];
  if (qop) parts.push(`qop=${qop}`, `nc=${nc}`, `cnonce="${cnonce}"`);
  if (params.opaque) parts.push(`opaque="${params.opaque}"`);
  return `Digest ${parts.join(', ')}`;
}

/** GET a snapshot from the enrolled camera (Basic, or Digest when asked), with a total deadline and a size cap. */
async function fetchCapped(uri: string, addr: OnvifAddress, timeoutMs: number, ctx: DriverContext): Promise<Buffer> {
  const u = new URL(uri);
  if (u.protocol !== 'http:') throw new DriverError(`snapshot URI ${u.protocol} not supported`, 'not_supported', false);
  // the snapshot must come from the camera we enrolled, not wherever its answer points
  const path = u.pathname + u.search;
  const basic = addr.username ? `Basic ${Buffer.from(`${addr.username}:${addr.password}`).toString('base64')}` : undefined;
  const first = await getOnce(path, basic, addr, timeoutMs, ctx);
  if (first.status === 401 && first.challenge && addr.username) {
    const auth = digestAuthorization(first.challenge, addr, path);
    if (auth) {
      const second = await getOnce(path, auth, addr, timeoutMs, ctx);
      if (second.status === 200) return second.body!;
      throw new DriverError(`snapshot: HTTP ${second.status}${second.status === 401 ? ' — 用户名或密码错误 wrong credentials' : ''}`, second.status === 401 ? 'unauthorized' : 'http_error', second.status !== 401, second.status);
    }
  }
  if (first.status === 200) return first.body!;
  throw new DriverError(`snapshot: HTTP ${first.status}${first.status === 401 ? ' — 用户名或密码错误 wrong credentials' : ''}`, first.status === 401 ? 'unauthorized' : 'http_error', first.status !== 401, first.status);
}

function getOnce(path: string, authorization: string | undefined, addr: OnvifAddress, timeoutMs: number, ctx: DriverContext): Promise<{ status: number; challenge?: string; body?: Buffer }> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (f: () => void) => {
      if (done) return;
      done = true;
      ctx.clock.clearTimeout(h);
      f();
    };
    const req = http.get({ host: addr.host, port: addr.port, path, headers: authorization ? { authorization } : {} }, (res) => {
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        const challenge = [res.headers['www-authenticate']].flat().find((v) => typeof v === 'string' && /^Digest/i.test(v));
        res.resume();
        return finish(() => resolve({ status, challenge }));
      }
      const declared = Number(res.headers['content-length'] ?? 0);
      if (declared > MAX_SNAPSHOT) {
        req.destroy();
        return finish(() => reject(new DriverError(`snapshot larger than ${MAX_SNAPSHOT} bytes; refused`, 'response_too_large', false)));
      }
      const chunks: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n > MAX_SNAPSHOT) {
          req.destroy();
          finish(() => reject(new DriverError(`snapshot larger than ${MAX_SNAPSHOT} bytes; refused`, 'response_too_large', false)));
        } else chunks.push(c);
      });
      res.on('end', () => finish(() => resolve({ status, body: Buffer.concat(chunks) })));
      res.on('error', (e) => finish(() => reject(classify(e, 'snapshot'))));
    });
    const h = ctx.clock.setTimeout(() => {
      req.destroy();
      finish(() => reject(new DriverError('snapshot: 超时 timeout', 'timeout', true)));
    }, timeoutMs);
    req.on('error', (e) => finish(() => reject(classify(e, 'snapshot'))));
  });
}
