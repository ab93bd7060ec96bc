// The dashboards' HTTP server: login and sessions, the one scope middleware, the JSON API, the
// live stream and the static web app (dashboards/web/, vanilla JS, no build step).

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo, Socket } from 'node:net';
import { systemClock, type Clock, type Logger, type Localized } from '../contract/index.ts';
import type { Db } from '../ingest/db.ts';
import { createLoginLimiter, createSessionStore, type SessionStore } from './auth.ts';
import { can, principalOf, type Permission, type Principal } from './access.ts';
import { ApiError, parseCookies, readJson, Router, sendError, sendJson } from './http.ts';
import { createLiveHub, type LiveHub } from './live.ts';
import { registerApi, withDevices, type ApiDeps } from './api.ts';
import type { DashboardServerOptions } from './types.ts';

export const SESSION_COOKIE = 'xiaoan_session';
export const CSRF_HEADER = 'x-xiaoan-csrf';

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  remote: string;
  /** set by the middleware for every route that needs a login */
  principal: Principal;
  /** the session token (to log out) */
  token: string;
}

export interface RouteOptions {
  /** null: no login needed (login itself, health) */
  permission: Permission | null;
}

export type ScopedHandler = (ctx: RequestContext, params: Record<string, string>) => Promise<void>;

export interface ApiRouter {
  route(method: string, pattern: string, permission: Permission | null, handler: ScopedHandler): void;
  sessions: SessionStore;
  live: LiveHub;
  clock: Clock;
  log: Logger;
  db: Db;
  sessionCookie(token: string, expiresAt: number): string;
  clearCookie(): string;
  limiter: ReturnType<typeof createLoginLimiter>;
  /** Register a WebSocket upgrade handler (camera live view); auth is checked before it runs. */
  upgrade(prefix: string, permission: Permission, handler: (req: IncomingMessage, socket: Socket, head: Buffer, principal: Principal, token: string) => void): void;
}

const WEB_ROOT = fileURLToPath(new URL('./web/', import.meta.url));
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wav': 'audio/wav',
};

// The JSMpeg player bundle (@cycjimmy/jsmpeg-player 6.1.2) injects two <style> elements (an empty
// one, then its CSS); their hashes are allowed so nothing inline else is.
const JSMPEG_STYLE_HASHES = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' 'sha256-lRyplcblLyRa4o+ZUBNzXETDGwKXzgKgrWbiYOwfTLg='";

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
  'content-security-policy':
    `default-src 'self'; img-src 'self' data: blob:; media-src 'self' data: blob:; connect-src 'self' ws: wss:; style-src 'self' ${JSMPEG_STYLE_HASHES}; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'`,
};

const unauthorized = () =>
  new ApiError(401, 'unauthenticated', { zh: '请先登录', en: 'please log in first' });
const forbidden = (permission: string) =>
  new ApiError(403, 'forbidden', { zh: `您的角色无权执行此操作（${permission}）`, en: `your role may not do this (${permission})` });

export interface DashboardServer {
  url: string;
  port: number;
  close(): Promise<void>;
  /** the routes, for the access-matrix test and docs */
  routes(): { method: string; pattern: string; permission: Permission | null }[];
}

export async function createDashboardServer(opts: DashboardServerOptions): Promise<DashboardServer> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log.child('dashboards');
  const db: Db | undefined = opts.db ?? (opts.store as { db?: Db }).db;
  if (!db) throw new Error('createDashboardServer: no database: pass `db` or a store that exposes `db`');
  const sessions = createSessionStore(db, clock, opts.sessionTtlMs);
  const limiter = createLoginLimiter(clock, opts.loginLimit);
  const live = await createLiveHub({
    db,
    clock,
    log: log.child('live'),
    fetchAlert: async (scope, id) => {
      const alert = await opts.alerting.get(scope, id);
      return alert ? (await withDevices(opts.store, scope, [alert as Record<string, unknown>]))[0] : null;
    },
    heartbeatMs: opts.heartbeatMs,
    sessionValid: async (token) => (await sessions.lookup(token)) !== null,
  });
  const secure = opts.secureCookies ? '; Secure' : '';

  const router = new Router<RequestContext>();
  const permissions = new Map<string, Permission | null>();
  const upgrades: { prefix: string; permission: Permission; handler: Parameters<ApiRouter['upgrade']>[2] }[] = [];

  async function authenticate(req: IncomingMessage): Promise<{ principal: Principal; token: string } | null> {
    const auth = req.headers.authorization;
    let token: string | undefined;
    let via: 'cookie' | 'bearer' = 'cookie';
    if (typeof auth === 'string' && /^Bearer\s+/i.test(auth)) {
      token = auth.replace(/^Bearer\s+/i, '').trim();
      via = 'bearer';
    } else {
      token = parseCookies(req.headers.cookie)[SESSION_COOKIE];
    }
    if (!token) return null;
    const session = await sessions.lookup(token);
    if (!session) return null;
    return { principal: principalOf(session.user, session.csrfToken, via), token };
  }

  const api: ApiRouter = {
    sessions,
    live,
    clock,
    log,
    db,
    limiter,
    route(method, pattern, permission, handler) {
      permissions.set(`${method} ${pattern}`, permission);
      router.add(method, pattern, async (ctx, params) => {
        if (permission !== null) {
          // The one middleware: session → principal (user, role, Scope). Endpoints get only this.
          const who = await authenticate(ctx.req);
          if (!who) throw unauthorized();
          if (!can(who.principal.role, permission)) throw forbidden(permission);
          const mutating = !['GET', 'HEAD'].includes(ctx.req.method ?? 'GET');
          if (mutating && who.principal.via === 'cookie' && ctx.req.headers[CSRF_HEADER] !== who.principal.csrfToken) {
            throw new ApiError(403, 'csrf', {
              zh: `缺少或错误的 ${CSRF_HEADER} 请求头（防跨站请求伪造）`,
              en: `missing or wrong ${CSRF_HEADER} header (cross-site request forgery protection)`,
            });
          }
          ctx.principal = who.principal;
          ctx.token = who.token;
        }
        await handler(ctx, params);
      });
    },
    upgrade(prefix, permission, handler) {
      upgrades.push({ prefix, permission, handler });
    },
    sessionCookie: (token, expiresAt) =>
      `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.max(0, Math.floor((expiresAt - clock.now()) / 1000))}${secure}`,
    clearCookie: () => `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure}`,
  };

  const deps: ApiDeps = { store: opts.store, alerting: opts.alerting, commands: opts.commands, extras: opts.extras ?? {} };
  const closers = await registerApi(api, deps);

  async function serveStatic(res: ServerResponse, pathname: string, head: boolean) {
    const root = opts.webRoot ?? WEB_ROOT;
    let rel: string;
    try {
      rel = decodeURIComponent(pathname);
    } catch {
      throw new ApiError(400, 'bad_path', { zh: '路径编码错误', en: 'malformed path encoding' });
    }
    if (rel.endsWith('/')) rel += 'index.html';
    const file = normalize(join(root, rel));
    if (!file.startsWith(normalize(root + sep)) && file !== normalize(root)) throw notFoundStatic();
    let info;
    try {
      info = await stat(file);
    } catch {
      // Client-side pages (/devices, /rules, /overview) all load the app shell.
      if (!extname(rel)) return serveStatic(res, '/', head);
      throw notFoundStatic();
    }
    if (!info.isFile()) throw notFoundStatic();
    const body = await readFile(file);
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': body.length,
      'cache-control': extname(file) === '.html' ? 'no-cache' : 'max-age=300',
      ...SECURITY_HEADERS,
    });
    res.end(head ? undefined : body);
  }

  const server = createServer((req, res) => {
    const started = clock.now();
    handle(req, res)
      .catch((e) => {
        if (e instanceof ApiError) return sendError(res, e);
        log.error('request failed', { method: req.method, path: (req.url ?? '').split('?')[0], error: (e as Error).message, stack: (e as Error).stack?.split('\n').slice(0, 4).join(' | ') });
        sendError(res, new ApiError(500, 'internal', { zh: '服务器内部错误，请稍后重试', en: 'internal server error; please try again' }));
      })
      .finally(() => {
        const ms = clock.now() - started;
        if (ms > 2000 && !(req.url ?? '').startsWith('/api/stream')) log.warn('slow request', { method: req.method, path: (req.url ?? '').split('?')[0], ms });
      });
  });

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    // Cross-site requests: a browser sends Origin on every cross-origin request; refuse those.
    const origin = req.headers.origin;
    if (origin && method !== 'GET' && method !== 'HEAD') {
      let originHost = '';
      try {
        originHost = new URL(origin).host;
      } catch {
        /* "null" or garbage */
      }
      if (originHost !== req.headers.host) {
        throw new ApiError(403, 'cross_origin', { zh: '拒绝跨站请求', en: 'cross-site request refused' });
      }
    }
    if (url.pathname.startsWith('/api/')) {
      const m = router.match(method, url.pathname);
      if (m === null) throw new ApiError(404, 'no_such_endpoint', { zh: `没有此接口：${url.pathname}`, en: `no such endpoint: ${url.pathname}` });
      if (m === 'method') throw new ApiError(405, 'method_not_allowed', { zh: `此接口不支持 ${method}`, en: `${method} is not allowed on ${url.pathname}` });
      const ctx = { req, res, url, remote: req.socket.remoteAddress ?? '' } as RequestContext;
      await m.handler(ctx, m.params);
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') throw new ApiError(405, 'method_not_allowed', { zh: '不支持的请求方法', en: 'method not allowed' });
    await serveStatic(res, url.pathname, method === 'HEAD');
  }

  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const entry = upgrades.find((u) => url.pathname.startsWith(u.prefix));
    const refuse = (status: number, text: string) => {
      socket.write(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      socket.destroy();
    };
    if (!entry) return refuse(404, 'Not Found');
    // Same-origin only: a WebSocket handshake carries cookies cross-site, so check Origin.
    const origin = req.headers.origin;
    if (origin) {
      try {
        if (new URL(origin).host !== req.headers.host) return refuse(403, 'Forbidden');
      } catch {
        return refuse(403, 'Forbidden');
      }
    }
    authenticate(req)
      .then((who) => {
        if (!who) return refuse(401, 'Unauthorized');
        if (!can(who.principal.role, entry.permission)) return refuse(403, 'Forbidden');
        entry.handler(req, socket, head, who.principal, who.token);
      })
      .catch((e) => {
        log.error('upgrade failed', { error: (e as Error).message });
        refuse(500, 'Internal Server Error');
      });
  });

  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const shownHost = host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host;
  const url = `http://${shownHost}:${addr.port}`;
  log.info('dashboards listening', { url });

  return {
    url,
    port: addr.port,
    routes: () =>
      router.list().map((r) => ({ ...r, permission: permissions.get(`${r.method} ${r.pattern}`) ?? null })),
    async close() {
      for (const c of closers) await c().catch(() => {});
      await live.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}

function notFoundStatic() {
  return new ApiError(404, 'not_found', { zh: '页面不存在', en: 'page not found' } satisfies Localized);
}
