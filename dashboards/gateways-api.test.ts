// Registering gateways over REST: inside the user's subtree only, every problem of the body at
// once, a generated password shown once, no silent password reset, and every change audited.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, SCHOOL_A, SCHOOL_B, startStack } from './testing.ts';

describe('POST /api/gateways and /api/gateways/:id/remove', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  beforeAll(async () => {
    stack = await startStack({});
  }, 120_000);
  afterAll(async () => {
    await stack?.close();
  });

  it('a technician registers a gateway of their school, which then lists; a second add is refused; remove forgets it', async () => {
    const tech = new Client(stack.server.url);
    expect((await tech.login('tech')).status).toBe(200);
    const r = await tech.request('POST', '/api/gateways', { id: 'gw-rest-1', county: '370102', orgPath: SCHOOL_A, name: '新网关' });
    expect(r.status).toBe(201);
    expect(r.body.gateway).toMatchObject({ id: 'gw-rest-1', county: '370102', orgPath: SCHOOL_A, name: '新网关' });
    expect(await stack.store.verifyGateway('gw-rest-1', r.body.password)).not.toBeNull();
    const listed = await tech.request('GET', '/api/gateways');
    expect(listed.body.gateways.map((g: { id: string }) => g.id)).toContain('gw-rest-1');
    const again = await tech.request('POST', '/api/gateways', { id: 'gw-rest-1', county: '370102', orgPath: SCHOOL_A, password: 'other-password' });
    expect(again.status).toBe(409);
    expect(await stack.store.verifyGateway('gw-rest-1', r.body.password)).not.toBeNull();
    expect((await tech.request('POST', '/api/gateways/gw-rest-1/remove')).status).toBe(200);
    expect(await stack.store.getGateway('gw-rest-1')).toBeNull();
    const audit = await stack.t.db.query<{ action: string; username: string }>("select action, username from audit_log where target = 'gw-rest-1' order by id");
    expect(audit.rows).toEqual([{ action: 'gateway.add', username: 'tech' }, { action: 'gateway.remove', username: 'tech' }]);
  });

  it('refuses another school\'s org path (403) and hides another school\'s gateway (404); reports every body problem at once', async () => {
    const tech = new Client(stack.server.url);
    await tech.login('tech');
    expect((await tech.request('POST', '/api/gateways', { id: 'gw-rest-2', county: '370103', orgPath: SCHOOL_B, password: 'password-2' })).status).toBe(403);
    await stack.store.registerGateway({ id: 'gw-rest-b', county: '370103', orgPath: SCHOOL_B, password: 'password-b' });
    expect((await tech.request('POST', '/api/gateways/gw-rest-b/remove')).status).toBe(404);
    expect(await stack.store.getGateway('gw-rest-b')).not.toBeNull();
    const bad = await tech.request('POST', '/api/gateways', { id: 'gw/x', county: '3701', orgPath: SCHOOL_A, colour: 'red' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.problems).toEqual([
      expect.stringMatching(/unknown field\(s\) colour/),
      expect.stringMatching(/^id: /),
      expect.stringMatching(/^county: "3701" must be a 6-digit county code/),
    ]);
    const desk = new Client(stack.server.url);
    await desk.login('desk');
    expect((await desk.request('POST', '/api/gateways', { id: 'gw-rest-3', county: '370102', orgPath: SCHOOL_A })).status).toBe(403);
  });
});
