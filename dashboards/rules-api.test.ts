// The rules page's API on the real rules library, store and alerting module: backtest a threshold
// sweep over stored readings, save a change with a note (version, diff, hot reload), and the
// scope limits on who may change what.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, startStack } from './testing.ts';

describe('rules API', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  beforeAll(async () => {
    stack = await startStack({ rules: true });
    await stack.seedSmokeHistory(2, [0.12, 0.18, 0.25]);
  }, 180_000);
  afterAll(async () => {
    await stack?.close();
  }, 180_000);

  it('backtests a threshold range: fewer alerts as the threshold rises', async () => {
    const author = new Client(stack.server.url);
    await author.login('author');
    const until = Date.now();
    const r = await author.post('/api/rules/smoke-sustained/backtest', { param: 'threshold', from: 0.1, to: 0.3, step: 0.05, since: until - 3 * 3600_000, until });
    expect(r.status).toBe(200);
    expect(r.body.points.map((p: any) => p.value)).toEqual([0.1, 0.15, 0.2, 0.25, 0.3]);
    // episodes at 0.12, 0.18, 0.25 lasting 30 s (rule needs 10 s above the threshold)
    expect(r.body.points.map((p: any) => p.alerts)).toEqual([3, 2, 1, 0, 0]);
    expect(r.body.current).toBe(0.15);
    expect(r.body.records).toBeGreaterThan(1000);
  }, 120_000);

  it('refuses a bad backtest with a message naming the problem', async () => {
    const author = new Client(stack.server.url);
    await author.login('author');
    const bad = await author.post('/api/rules/smoke-sustained/backtest', { param: 'nope', from: 0.1, to: 0.3, step: 0.05 });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message.en).toMatch(/no parameter "nope"/);
    const many = await author.post('/api/rules/smoke-sustained/backtest', { param: 'threshold', from: 0, to: 1, step: 0.001 });
    expect(many.status).toBe(400);
    expect((await author.post('/api/rules/no-such-rule/backtest', { param: 'x', from: 0, to: 1, step: 1 })).status).toBe(404);
  }, 120_000);

  it('saves a threshold and an override with a note; versions keep author, note and diff; alerting reloads', async () => {
    const author = new Client(stack.server.url);
    await author.login('author');
    const noNote = await author.post('/api/rules/smoke-sustained', { params: { threshold: 0.2 } });
    expect(noNote.status).toBe(400);
    const r = await author.post('/api/rules/smoke-sustained', { params: { threshold: 0.2 }, overrides: [{ scope: '37/3701', params: { threshold: 0.12 } }], note: '误报偏多，提高阈值' });
    expect(r.status).toBe(200);
    expect(r.body.version).toBe(1);
    const live = stack.alerting.rules().find((x) => x.id === 'smoke-sustained')!;
    expect(live.params.threshold).toBe(0.2);
    expect(live.overrides.map((o) => [o.orgPath, o.params.threshold])).toEqual([['37/3701', 0.12]]);
    const v = await author.get('/api/rules/smoke-sustained/versions');
    expect(v.body.versions[0]).toMatchObject({ version: 1, author: 'author', comment: '误报偏多，提高阈值' });
    expect(v.body.versions[0].diff).toMatch(/\+ .*threshold: 0.2/);
    expect(v.body.versions[0].source ?? '').not.toMatch(/password/);
  }, 120_000);

  it('limits changes to the author scope and role', async () => {
    // a city-level author may only add overrides inside the city
    const { seedUser } = await import('./auth.ts');
    await seedUser(stack.t.db, { username: 'cityauthor', password: 'test-password-1', role: 'author', orgPath: '37/3702' });
    const c = new Client(stack.server.url);
    await c.login('cityauthor');
    expect((await c.post('/api/rules/smoke-sustained', { params: { threshold: 0.5 }, note: 'x too high' })).status).toBe(403);
    expect((await c.post('/api/rules/smoke-sustained', { overrides: [{ scope: '37/3701', params: { threshold: 0.5 } }], note: 'not mine' })).status).toBe(403);
    const ok = await c.post('/api/rules/smoke-sustained', { overrides: [{ scope: '3702', params: { threshold: 0.11 } }], note: '青岛试点' });
    expect(ok.status).toBe(200);
    const live = stack.alerting.rules().find((x) => x.id === 'smoke-sustained')!;
    // the other city's override was kept
    expect(live.overrides.map((o) => o.orgPath).sort()).toEqual(['37/3701', '37/3702']);
    const desk = new Client(stack.server.url);
    await desk.login('desk');
    expect((await desk.get('/api/rules')).status).toBe(403);
    const tech = new Client(stack.server.url);
    await tech.login('tech');
    expect((await tech.get('/api/rules')).status).toBe(200);
    expect((await tech.post('/api/rules/smoke-sustained/backtest', { param: 'threshold', from: 0.1, to: 0.2, step: 0.05 })).status).toBe(403);
  }, 120_000);

  it('shows rule sources and versions only as far as the reader\'s subtree reaches', async () => {
    // after the tests above: v1 (province author: threshold + override 37/3701), v2 (Qingdao author: override 37/3702)
    const { seedUser } = await import('./auth.ts');
    await seedUser(stack.t.db, { username: 'jinanauthor', password: 'test-password-1', role: 'author', orgPath: '37/3701' });
    const qd = new Client(stack.server.url);
    await qd.login('cityauthor');
    const jn = new Client(stack.server.url);
    await jn.login('jinanauthor');
    const rule = async (c: Client) => (await c.get('/api/rules')).body.rules.find((r: { id: string }) => r.id === 'smoke-sustained');
    const qdRule = await rule(qd);
    expect(qdRule.source).toMatch(/37\/3702/);
    expect(qdRule.source).not.toMatch(/37\/3701\b/);
    expect(qdRule.overrides.map((o: { orgPath: string }) => o.orgPath)).toEqual(['37/3702']);
    expect((await rule(jn)).source).not.toMatch(/37\/3702/);
    const versions = async (c: Client) => (await c.get('/api/rules/smoke-sustained/versions')).body.versions as { version: number; author: string; comment: string; diff: string }[];
    const qdV = await versions(qd);
    expect(qdV.map((v) => v.version)).toEqual([2, 1]); // v1 changed the threshold, which applies to Qingdao too
    expect(qdV.find((v) => v.version === 1)!.diff).not.toMatch(/37\/3701\b/);
    expect(qdV.find((v) => v.version === 1)!.diff).toMatch(/threshold: 0.2/);
    const jnV = await versions(jn);
    // Qingdao's own change is not Jinan's to see: neither its diff, nor its author and note
    expect(jnV.map((v) => v.version)).toEqual([1]);
    expect(JSON.stringify(jnV)).not.toMatch(/青岛试点|cityauthor|3702/);
    // the province sees everything
    const author = new Client(stack.server.url);
    await author.login('author');
    expect((await versions(author)).map((v) => v.version)).toEqual([2, 1]);
    expect((await rule(author)).source).toMatch(/37\/3701[\s\S]*37\/3702|37\/3702[\s\S]*37\/3701/);
  }, 120_000);
});
