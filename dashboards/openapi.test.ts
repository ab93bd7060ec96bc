// The OpenAPI document: generated from the routes, committed, served behind the login.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENAPI_FILE, openApiDocument, renderOpenApi } from './openapi.ts';
import { Client, startStack } from './testing.ts';

describe('OpenAPI document', () => {
  let doc: Record<string, any>;
  let stack: Awaited<ReturnType<typeof startStack>>;
  beforeAll(async () => {
    doc = await openApiDocument();
    stack = await startStack();
  }, 120_000);
  afterAll(async () => {
    await stack?.close();
  }, 60_000);

  it('matches the committed docs/openapi/xiaoan-api.json (run `npm run openapi` after changing a route)', async () => {
    expect(await readFile(OPENAPI_FILE, 'utf8')).toBe(renderOpenApi(doc));
  });

  it('describes every API route the server has, with its permission and input schemas', () => {
    const documented = new Set(Object.entries(doc.paths as Record<string, object>).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`)));
    const apiRoutes = stack.server.routes().filter((r) => r.pattern.startsWith('/api/') && !r.pattern.startsWith('/api/docs') && r.pattern !== '/api/cameras/:gatewayId/:deviceId/live');
    expect(apiRoutes.map((r) => `${r.method} ${r.pattern}`).filter((k) => !documented.has(k))).toEqual([]);
    const alerts = doc.paths['/api/alerts'].get;
    expect(alerts.description).toMatch(/permission: alerts\.read; scope: org-subtree/);
    expect(alerts.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['site', 'state', 'category', 'limit', 'from', 'to']));
    expect(doc.paths['/api/rules/{id}'].post.requestBody.content['application/json'].schema.properties).toHaveProperty('note');
  });

  it('serves the document and the browsable page only after login', async () => {
    const anon = new Client(stack.server.url);
    expect((await anon.get('/api/openapi.json')).status).toBe(401);
    expect((await anon.get('/api/docs')).status).toBe(401);
    const desk = new Client(stack.server.url);
    await desk.login('desk');
    const served = await desk.get('/api/openapi.json');
    expect(served.status).toBe(200);
    expect(Object.keys(served.body.paths)).toEqual(expect.arrayContaining(['/api/alerts', '/api/login']));
    const page = await fetch(stack.server.url + '/api/docs/', { headers: { cookie: desk.cookie } });
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/swagger/i);
  });

  it('answers input that fails its schema with the bilingual error shape', async () => {
    const desk = new Client(stack.server.url);
    await desk.login('desk');
    const r = await desk.get('/api/alerts?limit=abc');
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'invalid_input', message: { zh: expect.stringMatching(/查询参数/), en: expect.stringMatching(/query\.limit/) } });
    const big = await desk.post('/api/alerts/1/ack', { comment: 'x'.repeat(70 * 1024) });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('body_too_large');
    const notJson = await desk.request('POST', '/api/alerts/1/ack', undefined, { 'content-type': 'application/json', 'x-xiaoan-csrf': desk.csrf });
    expect(notJson.status).toBe(404); // an empty JSON body is {}: the request reached the handler
  });
});
