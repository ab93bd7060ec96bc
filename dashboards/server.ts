// The dashboards' HTTP server on Fastify: login and sessions, the one scope hook, the JSON API
// (every route declared with its permission, scope rule and zod schemas, see routes.ts), the live
// streams (SSE, camera WebSocket), the OpenAPI document and the static web app (dashboards/web/).

import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyReply, type FastifyError } from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyHelmet from '@fastify/helmet';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifyStatic from '@fastify/static';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import fastifyWebsocket from '@fastify/websocket';
import { jsonSchemaTransform, validatorCompiler } from 'fastify-type-provider-zod';
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { systemClock, type Logger } from '../contract/index.ts';
import type { Db } from '../ingest/db.ts';
import { createLoginLimiter, createSessionStore, type SessionStore } from './auth.ts';
import { can, principalOf, type Permission, type Principal } from './access.ts';
import { ApiError, badRequest, frameworkError, sendError } from './http.ts';
import { createLiveHub } from './live.ts';
import { registerApi, withDevices, type ApiDeps } from './api.ts';
import { DEFAULT_LIVE_LIMITS, type ApiRouter, type LiveLimits, type RequestContext, type RouteConfig, type RouteScope } from './routes.ts';
import type { DashboardServerOptions } from './types.ts';

export type { ApiRouter, RequestContext } from './routes.ts';
export const SESSION_COOKIE = 'xiaoan_session';
export const CSRF_HEADER = 'x-xiaoan-csrf';
export const API_VERSION = '1.0.0';

const WEB_ROOT = fileURLToPath(new URL('./web/', import.meta.url));

// The JSMpeg player bundle (@cycjimmy/jsmpeg-player 6.1.2) injects two <style> elements (an empty
// one, then its CSS); their hashes are allowed so nothing inline else is.
const JSMPEG_STYLE_HASHES = ["'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='", "'sha256-lRyplcblLyRa4o+ZUBNzXETDGwKXzgKgrWbiYOwfTLg='"];
const CSP_DIRECTIVES = {
  defaultSrc: ["'self'"],
  imgSrc: ["'self'", 'data:', 'blob:'],
  mediaSrc: ["'self'", 'data:', 'blob:'],
  connectSrc: ["'self'", 'ws:', 'wss:'],
  styleSrc: ["'self'", ...JSMPEG_STYLE_HASHES],
  scriptSrc: ["'self'"],
  frameAncestors: ["'none'"],
  baseUri: ["'none'"],
  formAction: ["'self'"],
};

const unauthorized = () => new ApiError(401, 'unauthenticated', { zh: '请先登录', en: 'please log in first' });
const forbidden = (permission: string) =>
  new ApiError(403, 'forbidden', { zh: `您的角色无权执行此操作（${permission}）`, en: `your role may not do this (${permission})` });
const undeclared = (url: string) =>
  new ApiError(500, 'undeclared_route', { zh: `接口 ${url} 未声明权限`, en: `route ${url} declares no permission` });

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    token: string;
    checked: unknown;
  }
}

/** One row of the route table (Fastify's own, collected with onRoute). */
export interface RouteInfo {
  method: string;
  pattern: string;
  permission: Permission | null;
  scope: RouteScope;
  websocket: boolean;
}

export interface DashboardServer {
  url: string;
  port: number;
  close(): Promise<void>;
  /** every route Fastify serves, with its declared permission and scope (access matrix, docs) */
  routes(): RouteInfo[];
  /** in-process requests (tests: another remote address) */
  inject: FastifyInstance['inject'];
}

function sameOrigin(request: FastifyRequest): boolean {
  const origin = request.headers.origin;
  if (!origin) return true;
  try {
    return new URL(origin).host === request.headers.host;
  } catch {
    return false; // "null" or garbage
  }
}

/** The Fastify app with every route registered, not yet listening (the OpenAPI script uses it too). */
export async function buildDashboardApp(opts: DashboardServerOptions) {
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

  const app = Fastify({ logger: false, forceCloseConnections: true, ...(opts.trustProxy ? { trustProxy: opts.trustProxy } : {}), bodyLimit: 64 * 1024, exposeHeadRoutes: true, return503OnClosing: false });
  app.setValidatorCompiler(validatorCompiler);
  // Response schemas document the answers (OpenAPI); answers are written as JSON as they are.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  app.decorateRequest('principal', null);
  app.decorateRequest('token', '');
  app.decorateRequest('checked', null);

  const routeTable = collectRoutes(app);
  installParsingAndErrors(app, log);
  await registerPlugins(app, !!opts.secureCookies);
  installAccessHook(app, sessions);
  const api = createApiRouter(app, { sessions, live, clock, log, db, limiter, secure: !!opts.secureCookies, liveLimits: opts.liveLimits });
  const deps: ApiDeps = { store: opts.store, alerting: opts.alerting, commands: opts.commands, extras: opts.extras ?? {} };
  const closers = await registerApi(api, deps);

  await registerDocs(app, api);
  await registerWebApp(app, opts.webRoot ?? WEB_ROOT);

  await app.ready();
  return {
    app,
    routes: routeTable,
    async close() {
      for (const c of closers) await c().catch(() => {});
      await live.close();
      await app.close();
    },
  };
}

/** Fastify's own route table, as RouteInfo rows (HEAD twins left out). */
function collectRoutes(app: FastifyInstance) {
  // Fastify's own route table; read lazily, since hooks of plugin contexts fill in config after this one ran.
  const table: { method: string; r: { url: string; config?: unknown; wsHandler?: unknown; websocket?: boolean } }[] = [];
  app.addHook('onRoute', (r) => {
    for (const m of Array.isArray(r.method) ? r.method : [r.method]) if (m !== 'HEAD') table.push({ method: m, r });
  });
  return (): RouteInfo[] =>
    table.map(({ method, r }) => {
      const cfg = (r.config ?? {}) as Partial<RouteConfig>;
      return { method, pattern: r.url, permission: cfg.permission as Permission | null, scope: cfg.scope as RouteScope, websocket: !!r.wsHandler || !!r.websocket };
    });

}

function installParsingAndErrors(app: FastifyInstance, log: Logger) {
  // One JSON parser: an empty body is {}, anything else must be a JSON object.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, text, done) => {
    if (text === '') return done(null, {});
    let parsed: unknown;
    try {
      parsed = JSON.parse(text as string);
    } catch (e) {
      return done(badRequest('bad_json', `请求体不是有效的 JSON：${(e as Error).message}`, `request body is not valid JSON: ${(e as Error).message}`), undefined);
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return done(badRequest('bad_json', '请求体须为 JSON 对象', 'request body must be a JSON object'), undefined);
    done(null, parsed);
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof ApiError) return sendError(reply, err);
    const mapped = frameworkError(err);
    if (mapped) return sendError(reply, mapped);
    log.error('request failed', { method: request.method, path: request.url.split('?')[0], error: err.message, stack: err.stack?.split('\n').slice(0, 4).join(' | ') });
    sendError(reply, new ApiError(500, 'internal', { zh: '服务器内部错误，请稍后重试', en: 'internal server error; please try again' }));
  });

}

async function registerPlugins(app: FastifyInstance, secure: boolean) {
  await app.register(fastifyCookie);
  await app.register(fastifyHelmet, {
    contentSecurityPolicy: { useDefaults: false, directives: CSP_DIRECTIVES },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'same-origin' },
    hsts: secure ? undefined : false,
    crossOriginEmbedderPolicy: false,
  });
  await app.register(fastifyRateLimit, {
    global: false,
    errorResponseBuilder: (_req, c) => new ApiError(429, 'too_many_requests', { zh: '请求过于频繁，请稍后再试', en: 'too many requests; try again shortly' }, { retryAfterMs: c.ttl }),
  });
  await app.register(fastifyWebsocket, { options: { maxPayload: 1024 } });
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: '校安 Xiaoan dashboards API', version: API_VERSION, description: 'Every route of the dashboards server. Errors: { error: { code, message: { zh, en } } }. Mutations with the session cookie need the x-xiaoan-csrf header.' },
      components: {
        securitySchemes: {
          session: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE },
          bearer: { type: 'http', scheme: 'bearer' },
        },
      },
    },
    transform: jsonSchemaTransform,
  });

}

function installAccessHook(app: FastifyInstance, sessions: SessionStore) {
  async function authenticate(request: FastifyRequest): Promise<{ principal: Principal; token: string } | null> {
    const auth = request.headers.authorization;
    let token: string | undefined;
    let via: 'cookie' | 'bearer' = 'cookie';
    if (typeof auth === 'string' && /^Bearer\s+/i.test(auth)) {
      token = auth.replace(/^Bearer\s+/i, '').trim();
      via = 'bearer';
    } else {
      token = request.cookies[SESSION_COOKIE];
    }
    if (!token) return null;
    const session = await sessions.lookup(token);
    if (!session) return null;
    return { principal: principalOf(session.user, session.csrfToken, via), token };
  }

  // The one hook: cross-site refusal, then session → principal (user, role, Scope) and the
  // route's declared permission. Runs before the body is read, so strangers get 401, not 400.
  app.addHook('onRequest', async (request) => {
    const mutating = request.method !== 'GET' && request.method !== 'HEAD';
    if ((mutating || request.headers.upgrade) && !sameOrigin(request)) {
      throw new ApiError(403, 'cross_origin', { zh: '拒绝跨站请求', en: 'cross-site request refused' });
    }
    if (request.is404) return;
    const cfg = request.routeOptions.config as Partial<RouteConfig>;
    if (cfg.permission === undefined) throw undeclared(request.routeOptions.url ?? request.url);
    if (cfg.permission === null) return;
    const who = await authenticate(request);
    if (!who) throw unauthorized();
    if (!can(who.principal.role, cfg.permission)) throw forbidden(cfg.permission);
    if (mutating && who.principal.via === 'cookie' && request.headers[CSRF_HEADER] !== who.principal.csrfToken) {
      throw new ApiError(403, 'csrf', {
        zh: `缺少或错误的 ${CSRF_HEADER} 请求头（防跨站请求伪造）`,
        en: `missing or wrong ${CSRF_HEADER} header (cross-site request forgery protection)`,
      });
    }
    request.principal = who.principal;
    request.token = who.token;
  });

}

const ctxOf = (request: FastifyRequest, reply: FastifyReply): RequestContext => ({
  req: request.raw,
  request,
  reply,
  url: new URL(request.url, 'http://localhost'),
  remote: request.ip ?? request.socket.remoteAddress ?? '',
  principal: request.principal as Principal,
  token: request.token,
  body: (request.body && typeof request.body === 'object' ? request.body : {}) as Record<string, unknown>,
  send(status, body, headers = {}) {
    reply.code(status).headers({ 'cache-control': 'no-store', ...headers }).send(body);
  },
});


function createApiRouter(
  app: FastifyInstance,
  deps: Pick<ApiRouter, 'sessions' | 'live' | 'clock' | 'log' | 'db' | 'limiter'> & { secure: boolean; liveLimits?: Partial<LiveLimits> },
): ApiRouter {
  const { clock, secure, liveLimits, ...rest } = deps;
  return {
    ...rest,
    clock,
    limits: { ...DEFAULT_LIVE_LIMITS, ...liveLimits },
    route(method, url, spec, handler) {
      app.route({
        method,
        url,
        bodyLimit: spec.bodyLimit ?? 64 * 1024,
        config: { permission: spec.permission, scope: spec.scope, ...(spec.rateLimit ? { rateLimit: { max: spec.rateLimit.max, timeWindow: spec.rateLimit.windowMs } } : {}) } as never,
        schema: {
          summary: spec.summary,
          tags: spec.tags ?? [url.split('/')[2] ?? 'api'],
          ...(spec.permission ? { security: [{ session: [] }, { bearer: [] }], description: `permission: ${spec.permission}; scope: ${spec.scope}` } : { description: `no login; scope: ${spec.scope}` }),
          ...(spec.params ? { params: spec.params } : {}),
          ...(spec.query ? { querystring: spec.query } : {}),
          ...(spec.body ? { body: spec.body } : {}),
          ...(spec.response ? { response: spec.response } : {}),
        },
        handler: async (request, reply) => {
          await handler(ctxOf(request, reply), request.params as Record<string, string>);
        },
      });
    },
    socket(url, spec) {
      app.route({
        method: 'GET',
        url,
        config: { permission: spec.permission, scope: spec.scope } as never,
        schema: { summary: spec.summary, ...(spec.params ? { params: spec.params } : {}) },
        preHandler: async (request, reply) => {
          request.checked = await spec.check(ctxOf(request, reply), request.params as Record<string, string>);
        },
        handler: async (_request, reply) => {
          sendError(reply, new ApiError(426, 'upgrade_required', { zh: '此接口须以 WebSocket 连接', en: 'this endpoint needs a WebSocket connection' }));
        },
        wsHandler: (socket, request) => spec.open(socket, ctxOf(request, null as unknown as FastifyReply), request.checked as never),
      });
    },
    setSessionCookie(ctx, token, expiresAt) {
      ctx.reply.setCookie(SESSION_COOKIE, token, { path: '/', httpOnly: true, sameSite: 'strict', secure, maxAge: Math.max(0, Math.floor((expiresAt - clock.now()) / 1000)) });
    },
    clearSessionCookie(ctx) {
      ctx.reply.setCookie(SESSION_COOKIE, '', { path: '/', httpOnly: true, sameSite: 'strict', secure, maxAge: 0 });
    },
  };

}

async function registerDocs(app: FastifyInstance, api: ApiRouter) {
  // The OpenAPI document and its browsable page, for logged-in users only.
  api.route('GET', '/api/openapi.json', { permission: 'session', scope: 'catalogue', summary: 'This OpenAPI document' }, async (ctx) => {
    ctx.send(200, app.swagger());
  });
  await app.register(async (docs) => {
    docs.addHook('onRoute', (r) => {
      r.config = { ...(r.config as object), permission: 'session', scope: 'catalogue' } as never;
    });
    await docs.register(fastifySwaggerUi, { routePrefix: '/api/docs', staticCSP: true });
  });

}

async function registerWebApp(app: FastifyInstance, root: string) {
  // The web app: public static files (html revalidated, the rest cached 5 min); pages of the
  // client-side router (/devices, /rules…) all load the app shell.
  await app.register(async (web) => {
    web.addHook('onRoute', (r) => {
      r.config = { ...(r.config as object), permission: null, scope: 'public' } as never;
    });
    await web.register(fastifyStatic, {
      root,
      wildcard: true,
      cacheControl: false,
      setHeaders: (res, path) => res.header('cache-control', extname(path) === '.html' ? 'no-cache' : 'public, max-age=300'),
    });
  });
  let shell: Buffer | null = null;
  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split('?')[0]!;
    if (path.startsWith('/api/')) {
      return sendError(reply, new ApiError(404, 'no_such_endpoint', { zh: `没有此接口：${path}`, en: `no such endpoint: ${path}` }));
    }
    if ((request.method === 'GET' || request.method === 'HEAD') && !extname(path) && !path.includes('..') && !/%2e|%2f/i.test(path)) {
      shell ??= await readFile(`${root}/index.html`);
      return reply.code(200).type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(shell);
    }
    sendError(reply, new ApiError(404, 'not_found', { zh: '页面不存在', en: 'page not found' }));
  });

}

export async function createDashboardServer(opts: DashboardServerOptions): Promise<DashboardServer> {
  const built = await buildDashboardApp(opts);
  await built.app.listen({ port: opts.port ?? 0, host: opts.host ?? '127.0.0.1' });
  const addr = built.app.server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const shownHost = host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host;
  const url = `http://${shownHost}:${addr.port}`;
  opts.log.child('dashboards').info('dashboards listening', { url });
  return { url, port: addr.port, routes: built.routes, inject: built.app.inject.bind(built.app), close: built.close };
}
