// The gateway's local HTTP API for technicians, plus /metrics and /healthz.
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
// With http.token set, /api/* wants `Authorization: Bearer TOKEN`.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from '../contract/index.ts';
import type { Gateway } from './gateway.ts';
import { EnrolmentError } from './registry.ts';

export interface EdgeHttp {
  url: string;
  port: number;
  close(): Promise<void>;
}

const MAX_BODY = 2 * 1024 * 1024;

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly body?: unknown) {
    super(message);
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, `请求过大 body larger than ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const text = await readBody(req);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `请求不是 JSON body is not JSON: ${(e as Error).message}`);
  }
}

export async function startEdgeHttp(o: { gateway: Gateway; host: string; port: number; token?: string; log: Logger }): Promise<EdgeHttp> {
  const gw = o.gateway;
  const send = (res: ServerResponse, status: number, body: unknown, type = 'application/json; charset=utf-8') => {
    const text = typeof body === 'string' ? body : JSON.stringify(body, null, 1);
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(text);
  };
  const authorised = (req: IncomingMessage) => {
    if (!o.token) return true;
    const h = req.headers.authorization ?? '';
    const given = Buffer.from(h.startsWith('Bearer ') ? h.slice(7) : '');
    const want = Buffer.from(o.token);
    return given.length === want.length && timingSafeEqual(given, want);
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://gateway');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const test = url.searchParams.get('test') !== 'false';

    if (path === '/healthz' && method === 'GET') {
      const s = gw.status();
      // losing records (the buffer cannot be written) is unhealthy; an uplink outage is not: that is what the buffer is for
      const losing = s.bufferFailing;
      // connected, but the centre has not receipted for two timeouts: records pile up (docs/delivery.md)
      const unreceipted = (s.uplink?.oldestUnconfirmedMs ?? 0) > 2 * gw.config.uplink.receiptTimeoutMs;
      return send(res, losing || !s.running ? 503 : 200, {
        status: !s.running ? 'stopped' : losing ? 'failing' : s.uplink?.state === 'connected' && !unreceipted ? 'ok' : 'degraded',
        uplink: s.uplink?.state ?? 'stopped',
        buffer: { depth: s.buffer.depth, oldestAgeMs: s.buffer.oldestAgeMs, dropped: s.buffer.dropped, lastSeq: s.buffer.lastSeq, quarantined: s.buffer.quarantined },
        custody: { awaitingReceipt: s.uplink?.awaitingReceipt ?? 0, oldestUnconfirmedMs: s.uplink?.oldestUnconfirmedMs ?? 0, resends: s.uplink?.resends ?? 0 },
        devices: s.devices,
      });
    }
    if (path === '/metrics' && method === 'GET') return send(res, 200, gw.metrics(), 'text/plain; version=0.0.4; charset=utf-8');
    if (!path.startsWith('/api/')) throw new HttpError(404, `没有此路径 no such path ${path}`);
    if (!authorised(req)) throw new HttpError(401, '需要令牌 Authorization: Bearer TOKEN required');

    if (path === '/api/status' && method === 'GET') return send(res, 200, gw.status());
    if (path === '/api/commands' && method === 'GET') return send(res, 200, gw.registry.auditLog(200));
    if (path === '/api/devices' && method === 'GET') return send(res, 200, gw.listDevices().map(publicView));
    if (path === '/api/devices' && method === 'POST') {
      const r = await gw.enrol(await readJson(req), { test, source: 'api' });
      return send(res, 201, { device: publicView(r.device), test: r.test });
    }
    if (path === '/api/devices/test' && method === 'POST') return send(res, 200, await gw.testDevice(await readJson(req)));
    if (path === '/api/devices/import' && method === 'POST') return send(res, 200, await gw.importCsv(await readBody(req), { source: 'api-import' }));
    const m = /^\/api\/devices\/([^/]+)(\/test)?$/.exec(path);
    if (m) {
      const id = decodeURIComponent(m[1]!);
      if (m[2] && method === 'POST') return send(res, 200, await gw.testDevice(id));
      if (!m[2] && method === 'GET') {
        const d = gw.listDevices().find((x) => x.id === id);
        if (!d) throw new HttpError(404, `未登记的设备 device "${id}" is not enrolled`);
        return send(res, 200, publicView(d));
      }
      if (!m[2] && method === 'PUT') {
        const body = (await readJson(req)) as Record<string, unknown>;
        if (body && typeof body === 'object' && body.id !== undefined && body.id !== id) throw new HttpError(400, `id in the body "${String(body.id)}" differs from the path "${id}"`);
        const r = await gw.enrol({ ...body, id }, { test, source: 'api', replace: true });
        return send(res, 200, { device: publicView(r.device), test: r.test });
      }
      if (!m[2] && method === 'DELETE') {
        if (!(await gw.remove(id))) throw new HttpError(404, `未登记的设备 device "${id}" is not enrolled`);
        return send(res, 200, { removed: id });
      }
    }
    throw new HttpError(404, `没有此接口 no route ${method} ${path}`);
  }

  const server = createServer((req, res) => {
    route(req, res).catch((e) => {
      if (e instanceof EnrolmentError) {
        const exists = e.problems.length === 1 && /already enrolled/.test(e.problems[0]!.message);
        return send(res, exists ? 409 : 422, { error: e.message, problems: e.problems });
      }
      if (e instanceof HttpError) return send(res, e.status, { error: e.message });
      o.log.error('request failed', { method: req.method, url: req.url, error: (e as Error).message });
      send(res, 500, { error: (e as Error).message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  return {
    url: `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/** Never return password hashes; the registry only says whether one is set. */
function publicView<T extends object>(d: T): T {
  return d;
}
