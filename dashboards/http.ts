// The one error shape of every HTTP answer that is not a success:
//   { "error": { "code": "...", "message": { "zh": "...", "en": "..." }, ...extra } }
// and the mapping of Fastify's own failures (schema, body size, media type, rate limit) onto it.

import type { FastifyError, FastifyReply } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
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

/** Answer with the error shape (retry-after when the error says how long to wait). */
export function sendError(reply: FastifyReply, e: ApiError) {
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.end();
    return;
  }
  if (typeof e.extra.retryAfterMs === 'number') reply.header('retry-after', String(Math.ceil(e.extra.retryAfterMs / 1000)));
  reply.code(e.status).header('cache-control', 'no-store').send({ error: { code: e.code, message: e.text, ...e.extra } });
}

const WHERE: Record<string, { zh: string; en: string }> = {
  body: { zh: '请求体', en: 'body' },
  querystring: { zh: '查询参数', en: 'query' },
  params: { zh: '路径参数', en: 'path' },
  headers: { zh: '请求头', en: 'header' },
};

/** Fastify's own failures as ApiErrors; null when the error is not one of them (a bug: 500). */
export function frameworkError(err: FastifyError): ApiError | null {
  if (hasZodFastifySchemaValidationErrors(err)) {
    const ctx = (err as { validationContext?: string }).validationContext ?? 'body';
    const where = WHERE[ctx] ?? { zh: ctx, en: ctx };
    const problems = err.validation.map((v) => {
      const path = String(v.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
      return `${where.en}${path ? '.' + path : ''}: ${v.message}`;
    });
    return badRequest('invalid_input', `${where.zh}不符合接口要求：${problems.join('；')}`, `the ${where.en} does not match this endpoint: ${problems.join('; ')}`, { problems });
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, 'body_too_large', { zh: '请求体超过此接口允许的大小', en: 'request body is larger than this endpoint allows' });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(415, 'not_json', { zh: '请求体须为 JSON（Content-Type: application/json）', en: 'request body must be JSON (Content-Type: application/json)' });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return badRequest('bad_json', `请求体不是有效的 JSON：${err.message}`, `request body is not valid JSON: ${err.message}`);
  }
  if (err.statusCode === 429) {
    return new ApiError(429, 'too_many_requests', { zh: '请求过于频繁，请稍后再试', en: 'too many requests; try again shortly' });
  }
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
    return new ApiError(err.statusCode, 'bad_request', { zh: `请求无效：${err.message}`, en: `bad request: ${err.message}` });
  }
  return null;
}
