// No secret in clear at rest or in a log (docs/security.md, "Secrets at rest and in logs"):
// `xiaoan demo` (every tier: edge gateway with camera and MQTT devices, central broker, ingest,
// alerting with its delivery HMAC, dashboards) runs with known secrets, the technician's CLI reads
// the gateway's registry, then every log line and every byte of every file under the data dir
// (SQLite and PGlite files included) is searched for every secret.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../contract/index.ts';
import { readDemoSecrets, startDemo, type Demo } from '../cli/demo.ts';
import { main } from '../cli/main.ts';
import { DEMO } from '../cli/demo-school.ts';
import { freePort } from '../edge/index.ts';

const PASSWORD = 'demo-Secret-Pw-4711';

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

async function until<T>(what: string, fn: () => Promise<T | false | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('secrets at rest and in logs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-secrets-'));
  const lines: string[] = [];
  let demo: Demo | undefined;
  afterAll(async () => {
    await demo?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  beforeAll(async () => {
    demo = await startDemo({ dataDir: dir, port: 0, password: PASSWORD, log: createLogger({ level: 'debug', write: (l) => lines.push(l) }) });
    // readings through edge → broker → ingest; a camera and MQTT devices enrolled with credentials
    await until('readings stored', async () => (await demo!.store.db.query<{ n: number }>('select count(*)::int as n from readings')).rows[0]!.n > 0);
    await until('every device online', async () => demo!.gateway.status().devices.offline === 0 && demo!.gateway.status().devices.online >= 6);
    // a good and a bad login (the password must not reach the audit or the log)
    for (const password of [PASSWORD, `${PASSWORD}-wrong`]) {
      await fetch(`${demo.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'desk', password }) });
    }
  }, 120_000);

  it('no secret appears in any log line, CLI answer or file under the data dir', async () => {
    const kept = await readDemoSecrets(dir);
    const secrets: Record<string, string> = {
      demoPassword: PASSWORD,
      gatewayPassword: kept.gatewayPassword!,
      ingestPassword: kept.ingestPassword!,
      deliverySecret: kept.deliverySecret!,
      cameraPassword: kept.cameraPassword!,
      idHashKey: kept.idHashKey!,
      ...Object.fromEntries(Object.entries(kept.devicePasswords!).map(([id, pw]) => [`devicePassword:${id}`, pw])),
    };
    for (const [name, v] of Object.entries(secrets)) expect(v, name).toMatch(/^.{8,}$/);
    // the camera really is enrolled with its password in the URL (what the registry must seal)
    expect(demo!.gateway.registry.get('cam-1')?.url).toContain(`:${secrets.cameraPassword}@`);

    // the technician's view of the registry: `xiaoan device list` (gateway not reachable on this port: read from the file)
    const config = join(dir, 'gateway.yaml');
    writeFileSync(config, ['tier: edge', `gatewayId: ${DEMO.gatewayId}`, `county: "${DEMO.county}"`, `site: ${DEMO.school.orgPath}`, 'uplink: { url: "mqtt://127.0.0.1:9" }', `dataDir: ${join(dir, 'edge')}`, `http: { port: ${await freePort()} }`].join('\n'));
    const cli: string[] = [];
    for (const argv of [['device', 'list', '--config', config], ['device', 'list', '--config', config, '--json']]) {
      const code = await main(argv, { out: (l) => cli.push(l), err: (l) => cli.push(l), env: { ...process.env, XIAOAN_LOG_LEVEL: 'error' } });
      expect(code, cli.join('\n')).toBe(0);
    }
    expect(cli.join('\n')).toContain('cam-1');

    await demo!.stop();
    demo = undefined;
    const files = filesUnder(dir);
    expect(files.some((f) => f.endsWith('registry.sqlite'))).toBe(true);
    const hits: string[] = [];
    for (const [name, v] of Object.entries(secrets)) {
      const needle = Buffer.from(v, 'utf8');
      lines.forEach((l, i) => l.includes(v) && hits.push(`${name} in log line ${i}: ${l.slice(0, 200)}`));
      cli.forEach((l) => l.includes(v) && hits.push(`${name} in CLI answer: ${l.slice(0, 200)}`));
      for (const f of files) if (readFileSync(f).includes(needle)) hits.push(`${name} in ${f.slice(dir.length)}`);
    }
    expect(hits).toEqual([]);
    expect(lines.length).toBeGreaterThan(10);
  });

  it('keeps the gateway data dir 0700 and its SQLite files and key 0600', () => {
    const edge = join(dir, 'edge');
    expect(statSync(edge).mode & 0o777).toBe(0o700);
    for (const f of readdirSync(edge).filter((n) => /sqlite|secret\.key/.test(n))) expect(statSync(join(edge, f)).mode & 0o777, f).toBe(0o600);
  });
});
