// Device management commands as the API sends them: remove, test and discover go down as
// device.remove / device.test / device.discover only to a gateway inside the technician's school;
// a refusal answers 422 and silence 504, each in zh and en. (The whole path through a real gateway
// is test/browser-tech.test.ts; here the sender records and scripts answers.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandSchema, type Command, type CommandResult } from '../contract/index.ts';
import { Client, startStack } from './testing.ts';

describe('device commands through the API', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  const sent: { gatewayId: string; command: Command; timeoutMs?: number }[] = [];
  let answer: (c: Command) => Promise<CommandResult> = async (c) => ({ v: 1, id: c.id, ok: true, message: 'ok', ts: Date.now() });

  beforeAll(async () => {
    stack = await startStack({
      commands: {
        async send(gatewayId, command, timeoutMs) {
          // what the API sends must be a valid wire command
          expect(commandSchema.safeParse(command).success).toBe(true);
          sent.push({ gatewayId, command, timeoutMs });
          return answer(command);
        },
      },
    });
  }, 120_000);
  afterAll(async () => {
    await stack?.close();
  }, 60_000);

  it('sends remove, test and discover to the school gateway and maps the answers', async () => {
    const tech = new Client(stack.server.url);
    expect((await tech.login('tech')).status).toBe(200);
    const A = 'gw-3737000001';

    const rm = await tech.post(`/api/gateways/${A}/devices/temp-1/remove`);
    expect(rm.status).toBe(200);
    expect(sent.at(-1)).toMatchObject({ gatewayId: A, command: { kind: 'device.remove', device: 'temp-1', issuedBy: 'tech' } });

    answer = async (c) => ({ v: 1, id: c.id, ok: true, message: 'device answered: 1 observation(s)', data: { ok: true, device: 'temp-1', health: { state: 'online' }, observations: [{ kind: 'reading', metric: 'temperature', value: 20, ts: Date.now(), quality: 'good' }] }, ts: Date.now() });
    const test = await tech.post(`/api/gateways/${A}/devices/temp-1/test`);
    expect(test.status).toBe(200);
    expect(sent.at(-1)!.command).toMatchObject({ kind: 'device.test', device: 'temp-1' });
    expect(test.body.result).toMatchObject({ ok: true, health: { state: 'online' }, observations: [{ metric: 'temperature', value: 20 }] });

    answer = async (c) => ({ v: 1, id: c.id, ok: true, message: 'found 1', data: { protocol: 'modbus', found: [{ url: 'modbus-tcp://10.0.0.9:502?unit=1', unit: 1, answer: 'answered' }] }, ts: Date.now() });
    const disc = await tech.post(`/api/gateways/${A}/discover`, { protocol: 'modbus', target: 'modbus-tcp://10.0.0.9:502', units: [1, 2], timeoutMs: 2000 });
    expect(disc.status).toBe(200);
    expect(sent.at(-1)).toMatchObject({ command: { kind: 'device.discover', protocol: 'modbus', target: 'modbus-tcp://10.0.0.9:502', units: [1, 2], timeoutMs: 2000 }, timeoutMs: 12_000 });
    expect(disc.body.result.found).toEqual([expect.objectContaining({ unit: 1 })]);
    expect((await tech.post(`/api/gateways/${A}/discover`, { protocol: 'modbus' })).body.error).toMatchObject({ code: 'bad_discover', message: { zh: expect.stringMatching(/Modbus/), en: expect.stringMatching(/needs a port/) } });
    expect((await tech.post(`/api/gateways/${A}/discover`, { protocol: 'bacnet' })).status).toBe(400);

    // refusal: 422 with the gateway's reason in both languages
    answer = async (c) => ({ v: 1, id: c.id, ok: false, message: '本网关不接受此命令 this gateway does not accept device.remove (commands.allow)', ts: Date.now() });
    const refused = await tech.post(`/api/gateways/${A}/devices/temp-1/remove`);
    expect(refused.status).toBe(422);
    expect(refused.body.error).toMatchObject({ code: 'gateway_refused', message: { zh: expect.stringMatching(/网关未能移除设备 temp-1.*本网关不接受/), en: expect.stringMatching(/could not remove device temp-1.*does not accept/) } });
    const refusedTest = await tech.post(`/api/gateways/${A}/devices/temp-1/test`);
    expect(refusedTest.status).toBe(422);

    // silence: 504, retry later
    answer = async () => { throw new Error('no answer within 15000 ms'); };
    const silent = await tech.post(`/api/gateways/${A}/devices/temp-1/test`);
    expect(silent.status).toBe(504);
    expect(silent.body.error).toMatchObject({ code: 'gateway_unreachable', message: { zh: expect.stringMatching(/未在时限内应答/), en: expect.stringMatching(/did not answer in time/) } });

    // another school's gateway is not found, and nothing is sent to it; bad ids are refused
    const before = sent.length;
    expect((await tech.post('/api/gateways/gw-3737000002/devices/temp-1/remove')).status).toBe(404);
    expect((await tech.post('/api/gateways/gw-3737000002/devices/temp-1/test')).status).toBe(404);
    expect((await tech.post('/api/gateways/gw-3737000002/discover')).status).toBe(404);
    expect((await tech.post(`/api/gateways/${A}/devices/a%2Bb/remove`)).status).toBe(400);
    expect(sent.length).toBe(before);
    const desk = new Client(stack.server.url);
    await desk.login('desk');
    expect((await desk.post(`/api/gateways/${A}/devices/temp-1/remove`)).status).toBe(403);
    expect(sent.length).toBe(before);
  }, 60_000);
});
