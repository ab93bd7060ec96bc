// The gateway's local HTTP API for technicians (Fastify), plus /metrics and /healthz.
//   GET    /healthz                      liveness and state (200 running, 503 buffer failing)
//   GET    /metrics                      Prometheus
//   GET    /api/status                   runtime status
//   GET    /api/devices                  enrolled devices with live health
//   GET    /api/devices/:id
//   POST   /api/devices[?test=false]     enrol: validate, test live, save (409 if the id exists)
//   PUT    /api/devices/:id[?test=false] enrol or replace
//   POST   /api/devices/test             test an unsaved device; POST /api/devices/:id/test an enrolled one
//   DELETE /api/devices/:id
//   POST   /api/devices/import           text/csv; all rows or none; 422 lists every row and field
//   GET    /api/commands                 the downlink command audit
// /api/* always wants `Authorization: Bearer TOKEN`: http.token from the configuration, or else a
// token generated at first start and kept in DATA_DIR/http-token (mode 0600), printed by the demo.
// No answer carries a secret: passwords are dropped and credentials in URLs masked (redact()).
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../contract/index.ts';
import type { Gateway } from './gateway.ts';
import { EnrolmentError } from './registry.ts';

export interface EdgeHttp {
  url: string;
  port: number;
  /** the bearer token /api/* wants */
  token: string;
  close(): Promise<void>;
}

const MAX_BODY = 2 * 1024 * 1024;
const JSON_BODY = 256 * 1024;

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const SECRET_KEYS = /^(password|secret|secret_?hash|token|passwd|credentials?)$/i;

/** A copy without secrets: secret-named keys dropped, user:password in URLs masked. */
export function redact(value: unknown): unknown {
  if (typeof value === 'string') return /^[a-z][a-z0-9+.-]*:\/\/[^/\s]*@/i.test(value) ? maskUrl(value) : value;
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (!SECRET_KEYS.test(k)) out[k] = redact(v);
    return out;
  }
  return value;
}

function maskUrl(text: string): string {
  try {
    const u = new URL(text);
    if (!u.username && !u.password) return text;
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return text.replace(/\/\/[^/@\s]*@/, '//***@');
  }
}

/** The token a local client (xiaoan device …) sends: the configured one, else the generated one, if any. */
export function readEdgeToken(configured: string | undefined, dataDir: string): string | undefined {
  if (configured) return configured;
  try {
    return readFileSync(join(dataDir, 'http-token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The configured token, or the one this gateway generated earlier, or a new one (saved 0600). */
export function edgeToken(configured: string | undefined, dataDir: string): string {
  if (configured) return configured;
  const file = join(dataDir, 'http-token');
  if (existsSync(file)) {
    const saved = readFileSync(file, 'utf8').trim();
    if (saved.length >= 16) return saved;
  }
  const token = randomBytes(24).toString('base64url');
  writeFileSync(file, token + '\n', { mode: 0o600 });
  return token;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `请求不是 JSON body is not JSON: ${(e as Error).message}`);
  }
}

const idParams = z.object({ id: z.string().min(1).max(128) });
const testQuery = z.object({ test: z.enum(['true', 'false']).optional() });

export async function startEdgeHttp(o: { gateway: Gateway; host: string; port: number; token?: string; log: Logger }): Promise<EdgeHttp> {
  const gw = o.gateway;
  const token = edgeToken(o.token, gw.config.dataDir);
  const want = Buffer.from(token);
  const app = Fastify({ logger: false, bodyLimit: MAX_BODY, forceCloseConnections: true });
  // Bodies arrive as text: JSON routes parse it (any content type, as before), import reads CSV.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.setValidatorCompiler(({ schema }) => (data) => {
    const r = (schema as z.ZodType).safeParse(data);
    return r.success ? { value: r.data } : { error: new HttpError(400, `请求参数无效 invalid request: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`) };
  });

  const send = (reply: FastifyReply, status: number, body: unknown) =>
    reply.code(status).header('cache-control', 'no-store').type('application/json; charset=utf-8').send(JSON.stringify(redact(body), null, 1));
  const text = (req: FastifyRequest) => (typeof req.body === 'string' ? req.body : '');
  const json = (req: FastifyRequest) => {
    const t = text(req);
    if (t.length > JSON_BODY) throw new HttpError(413, `请求过大 body larger than ${JSON_BODY} bytes`);
    return parseJson(t);
  };
  const test = (req: FastifyRequest) => (req.query as { test?: string }).test !== 'false';

  app.setErrorHandler((e: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (e instanceof EnrolmentError) {
      const exists = e.problems.length === 1 && /already enrolled/.test(e.problems[0]!.message);
      return send(reply, exists ? 409 : 422, { error: e.message, problems: e.problems });
    }
    if (e instanceof HttpError) return send(reply, e.status, { error: e.message });
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return send(reply, 413, { error: `请求过大 body larger than ${MAX_BODY} bytes` });
    if (e.statusCode && e.statusCode < 500) return send(reply, e.statusCode, { error: e.message });
    o.log.error('request failed', { method: req.method, url: req.url, error: e.message });
    send(reply, 500, { error: e.message });
  });
  app.setNotFoundHandler((req, reply) => send(reply, 404, { error: `没有此接口 no route ${req.method} ${req.url.split('?')[0]}` }));

  // The token, always, on every /api/* route (compared in constant time).
  app.addHook('onRequest', async (req) => {
    if (!req.url.startsWith('/api/')) return;
    const h = req.headers.authorization ?? '';
    const given = Buffer.from(h.startsWith('Bearer ') ? h.slice(7) : '');
    if (!(given.length === want.length && timingSafeEqual(given, want))) throw new HttpError(401, '需要令牌 Authorization: Bearer TOKEN required');
  });

  app.get('/healthz', async (_req, reply) => {
    const s = gw.status();
    // losing records (the buffer cannot be written) is unhealthy; an uplink outage is not: that is what the buffer is for
    const losing = s.bufferFailing;
    // connected, but the centre has not receipted for two timeouts: records pile up (docs/delivery.md)
    const unreceipted = (s.uplink?.oldestUnconfirmedMs ?? 0) > 2 * gw.config.uplink.receiptTimeoutMs;
    return send(reply, losing || !s.running ? 503 : 200, {
      status: !s.running ? 'stopped' : losing ? 'failing' : s.uplink?.state === 'connected' && !unreceipted ? 'ok' : 'degraded',
      uplink: s.uplink?.state ?? 'stopped',
      buffer: { depth: s.buffer.depth, oldestAgeMs: s.buffer.oldestAgeMs, dropped: s.buffer.dropped, lastSeq: s.buffer.lastSeq, quarantined: s.buffer.quarantined },
      custody: { awaitingReceipt: s.uplink?.awaitingReceipt ?? 0, oldestUnconfirmedMs: s.uplink?.oldestUnconfirmedMs ?? 0, resends: s.uplink?.resends ?? 0 },
      devices: s.devices,
    });
  });
  app.get('/metrics', async (_req, reply) => reply.code(200).header('cache-control', 'no-store').type('text/plain; version=0.0.4; charset=utf-8').send(gw.metrics()));

  app.get('/api/status', async (_req, reply) => send(reply, 200, gw.status()));
  app.get('/api/commands', async (_req, reply) => send(reply, 200, gw.registry.auditLog(200)));
  app.get('/api/devices', async (_req, reply) => send(reply, 200, gw.listDevices()));
  app.post('/api/devices', { schema: { querystring: testQuery } }, async (req, reply) => {
    const r = await gw.enrol(json(req), { test: test(req), source: 'api' });
    return send(reply, 201, { device: r.device, test: r.test });
  });
  app.post('/api/devices/test', async (req, reply) => send(reply, 200, await gw.testDevice(json(req))));
  app.post('/api/devices/import', async (req, reply) => send(reply, 200, await gw.importCsv(text(req), { source: 'api-import' })));
  app.post('/api/devices/:id/test', { schema: { params: idParams } }, async (req, reply) => send(reply, 200, await gw.testDevice((req.params as { id: string }).id)));
  app.get('/api/devices/:id', { schema: { params: idParams } }, async (req, reply) => {
    const id = (req.params as { id: string }).id;
    const d = gw.listDevices().find((x) => x.id === id);
    if (!d) throw new HttpError(404, `未登记的设备 device "${id}" is not enrolled`);
    return send(reply, 200, d);
  });
  app.put('/api/devices/:id', { schema: { params: idParams, querystring: testQuery } }, async (req, reply) => {
    const id = (req.params as { id: string }).id;
    const body = json(req) as Record<string, unknown>;
    if (body && typeof body === 'object' && body.id !== undefined && body.id !== id) throw new HttpError(400, `id in the body "${String(body.id)}" differs from the path "${id}"`);
    const r = await gw.enrol({ ...body, id }, { test: test(req), source: 'api', replace: true });
    return send(reply, 200, { device: r.device, test: r.test });
  });
  app.delete('/api/devices/:id', { schema: { params: idParams } }, async (req, reply) => {
    const id = (req.params as { id: string }).id;
    if (!(await gw.remove(id))) throw new HttpError(404, `未登记的设备 device "${id}" is not enrolled`);
    return send(reply, 200, { removed: id });
  });

  await app.listen({ port: o.port, host: o.host });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  return {
    url: `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}`,
    port,
    token,
    close: () => app.close(),
  };
}
