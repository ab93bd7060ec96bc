// The technician's commands: `xiaoan device add|list|test|remove|import` on a gateway's registry
// (no gateway running: they work on the SQLite file), and `xiaoan edge` refusing a bad config
// with every problem at once.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../cli/main.ts';
import { freePort } from '../edge/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'xiaoan-edge-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l), env: { ...process.env, XIAOAN_LOG_LEVEL: 'error' } });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('xiaoan device … and xiaoan edge', async () => {
  const config = join(dir, 'gateway.yaml');
  writeFileSync(
    config,
    [
      'tier: edge',
      'gatewayId: gw-cli',
      'county: "370102"',
      'site: 37/3701/370102/3737000001',
      'uplink: { url: "mqtt://127.0.0.1:9" }',
      'dataDir: ./data',
      `http: { port: ${await freePort()} }`,
    ].join('\n'),
  );

  it('imports a CSV only when every row is valid, naming each bad row and field', async () => {
    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'id,profile,url,name\nsmoke-1,smoke-photoelectric-generic,modbus-tcp://10.0.0.1:502?unit=1,一层\nsmoke 2,nope,modbus-tcp://10.0.0.2:502,二层\ngate-1,gate-controller-generic,mqtt://gate-1,东门\n');
    const r = await run('device', 'import', '--config', config, bad);
    expect(r.code).toBe(1);
    expect(r.out.split('\n').sort()).toEqual([
      expect.stringMatching(/^row 2, id: /),
      expect.stringMatching(/^row 2, profile: .*unknown profile "nope"/),
      expect.stringMatching(/^row 3, password: /),
    ]);
    expect(r.err).toMatch(/3 处错误 problem\(s\); nothing was imported/);
    expect((await run('device', 'list', '--config', config, '--json')).out).toBe('');

    const good = join(dir, 'good.csv');
    writeFileSync(good, 'id,profile,url,name,password\nsmoke-1,smoke-photoelectric-generic,modbus-tcp://10.0.0.1:502?unit=1,一层,\ngate-1,gate-controller-generic,mqtt://gate-1,东门,gate-password-1\n');
    const ok = await run('device', 'import', '--config', config, good);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out)).toEqual({ added: ['smoke-1', 'gate-1'], updated: [] });
    const list = await run('device', 'list', '--config', config, '--json');
    expect(list.out.split('\n').map((l) => JSON.parse(l).id)).toEqual(['gate-1', 'smoke-1']);
    expect(list.out).not.toContain('gate-password-1');
  });

  it('adds (untested), refuses a bad device with every problem, tests and removes', async () => {
    const add = await run('device', 'add', '--config', config, '--id', 'temp-1', '--profile', 'temp-humidity-generic', '--url', 'modbus-tcp://10.0.0.3:502?unit=1', '--name', '配电室', '--no-test');
    expect(add.code).toBe(0);
    const bad = await run('device', 'add', '--config', config, '--id', 'x/y', '--profile', 'temp-humidity-generic', '--url', 'onvif://cam', '--interval-ms', '10');
    expect(bad.code).toBe(1);
    expect(bad.out.split('\n').map((l) => l.split(':')[0]).sort()).toEqual(['id', 'intervalMs', 'url']);
    // a live test of a device nobody answers for fails, and says why
    const port = await freePort();
    const t = await run('device', 'test', '--config', config, '--id', 'temp-2', '--profile', 'temp-humidity-generic', '--url', `modbus-tcp://127.0.0.1:${port}?unit=1`);
    expect(t.code).toBe(1);
    expect(t.err).toMatch(/FAIL/);
    expect((await run('device', 'remove', '--config', config, 'temp-1')).code).toBe(0);
    const again = await run('device', 'remove', '--config', config, 'temp-1');
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/not enrolled/);
  });

  it('xiaoan edge refuses a bad config, listing every problem', async () => {
    const badConfig = join(dir, 'bad.yaml');
    writeFileSync(badConfig, 'tier: edge\ngatewayId: "gw/1"\ncounty: "370100"\nsite: 37/3701/370102/3737000001\nuplink: { url: "http://x" }\ndataDir: ./d\nbuffer: { maxRecords: 5 }\n');
    const r = await run('edge', '--config', badConfig);
    expect(r.code).toBe(1);
    for (const path of ['gatewayId', 'county', 'uplink.url', 'buffer.maxRecords']) expect(r.err).toContain(path);
  });
});
