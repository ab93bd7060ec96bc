// A small router over node:http: method + path pattern (`/api/alerts/:id/ack`), JSON bodies with a
// size limit, and one error shape for every failure:
//   { "error": { "code": "...", "message": { "zh": "...", "en": "..." } } }

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Localized } from '../contract/index.ts';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly text: Localized,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(text.en);
    this.name = 'ApiError';
  }
}

export const badRequest = (code: string, zh: string, en: string, extra?: Record<string, unknown>) =>
  new ApiError(400, code, { zh, en }, extra);
export const notFound = (zh = '未找到', en = 'not found') => new ApiError(404, 'not_found', { zh, en });

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, e: ApiError) {
  if (res.headersSent) {
    res.end();
    return;
  }
  const headers: Record<string, string> = {};
  if (typeof e.extra.retryAfterMs === 'number') headers['retry-after'] = String(Math.ceil(e.extra.retryAfterMs / 1000));
  sendJson(res, e.status, { error: { code: e.code, message: e.text, ...e.extra } }, headers);
}

export async function readJson(req: IncomingMessage, limit = 256 * 1024): Promise<Record<string, unknown>> {
  const type = String(req.headers['content-type'] ?? '');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new ApiError(413, 'body_too_large', { zh: `请求体超过 ${limit} 字节`, en: `request body is larger than ${limit} bytes` });
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  if (!type.includes('application/json')) {
    throw new ApiError(415, 'not_json', { zh: '请求体须为 JSON（Content-Type: application/json）', en: 'request body must be JSON (Content-Type: application/json)' });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw badRequest('bad_json', `请求体不是有效的 JSON：${(e as Error).message}`, `request body is not valid JSON: ${(e as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw badRequest('bad_json', '请求体须为 JSON 对象', 'request body must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}

export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!header) return out;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const k = part.slice(0, i).trim();
    const v = part.slice(i + 1).trim();
    try {
      out[k] = decodeURIComponent(v);
    } catch {
      out[k] = v;
    }
  }
  return out;
}

export type Handler<C> = (ctx: C, params: Record<string, string>) => Promise<void>;

interface Route<C> {
  method: string;
  parts: string[];
  handler: Handler<C>;
}

export class Router<C> {
  private routes: Route<C>[] = [];

  add(method: string, pattern: string, handler: Handler<C>) {
    this.routes.push({ method, parts: pattern.split('/').filter(Boolean), handler });
    return this;
  }

  /** The route for a request, or 'method' when the path exists under another method, or null. */
  match(method: string, pathname: string): { handler: Handler<C>; params: Record<string, string> } | 'method' | null {
    const parts = pathname.split('/').filter(Boolean);
    let pathMatched = false;
    for (const r of this.routes) {
      if (r.parts.length !== parts.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < parts.length; i++) {
        const p = r.parts[i]!;
        if (p.startsWith(':')) {
          try {
            params[p.slice(1)] = decodeURIComponent(parts[i]!);
          } catch {
            ok = false;
            break;
          }
        } else if (p !== parts[i]) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
      pathMatched = true;
      if (r.method === method || (method === 'HEAD' && r.method === 'GET')) return { handler: r.handler, params };
    }
    return pathMatched ? 'method' : null;
  }

  list(): { method: string; pattern: string }[] {
    return this.routes.map((r) => ({ method: r.method, pattern: '/' + r.parts.join('/') }));
  }
}
