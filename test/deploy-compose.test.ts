// The compose files for a school, a city and the province: each passes Debian's
// `docker-compose -f FILE config`, each Xiaoan service's configuration passes `xiaoan config check`
// with the environment the compose file gives it, and no secret is written into a file.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { checkConfigFile, tierSettings, TIERS, type Tier } from '../cli/config/index.ts';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
const DOCKER = join(ROOT, 'docker');
const COMPOSE = '/usr/bin/docker-compose';
const haveCompose = existsSync(COMPOSE);
if (!haveCompose) console.warn(`deploy-compose: ${COMPOSE} is absent (apt-get install docker-compose; .ci/run installs it) — compose checks skipped`);

interface Service {
  image?: string;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string | null>;
  volumes?: Mount[];
  secrets?: Array<{ source: string } | string>;
  ports?: Port[];
  deploy?: { replicas?: number };
  healthcheck?: { test?: string[]; disable?: boolean };
  read_only?: boolean;
  cap_drop?: string[];
}
/** The ingest worker services (`ingest-1`, `ingest-2` …), one per replica name. */
const ingestWorkers = (c: Compose) => Object.entries(c.services).filter(([name]) => /^ingest-\d+$/.test(name));
interface Mount { type: 'bind' | 'volume'; source: string; target: string }
interface Port { published: number; target: number; host_ip?: string }
interface Compose {
  services: Record<string, Service>;
  secrets?: Record<string, { file: string }>;
}

/** `docker-compose config` in a clean environment: only what an operator's shell always has. */
async function composeConfig(file: string, extraEnv: Record<string, string> = {}): Promise<Compose> {
  const { stdout } = await run(COMPOSE, ['-f', file, 'config'], {
    cwd: DOCKER,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmpdir(), ...extraEnv },
  });
  const c = parse(stdout) as Compose;
  // Debian's docker-compose 1.29 prints volumes and ports in short syntax: normalise both.
  for (const svc of Object.values(c.services)) {
    svc.volumes = (svc.volumes ?? []).map((v) => (typeof v === 'string' ? shortVolume(v) : v));
    svc.ports = (svc.ports ?? []).map((p) => (typeof p === 'string' ? shortPort(p) : { ...p, published: Number(p.published) }));
  }
  return c;
}

function shortVolume(v: string): Mount {
  const [source, target] = v.split(':') as [string, string];
  return { type: source.startsWith('/') ? 'bind' : 'volume', source, target };
}

function shortPort(p: string): Port {
  const parts = p.replace(/\/(tcp|udp)$/, '').split(':');
  const target = Number(parts.pop());
  const published = Number(parts.pop());
  return { published, target, ...(parts.length ? { host_ip: parts[0] } : {}) };
}

const XIAOAN_IMAGE = /^(\$\{XIAOAN_IMAGE[^}]*\}|xiaoan)(:|$)/;
const isXiaoan = (s: Service) => XIAOAN_IMAGE.test(s.image ?? '') || /^xiaoan:/.test(s.image ?? '');
/** Variables of ours that are not settings (the health check's URL, the simulators). */
const NOT_SETTINGS = /^XIAOAN_(HEALTH_URL|SIM_[A-Z_]+)$/;
const SECRETISH = /PASSWORD|SECRET|TOKEN|COOKIE|PRIVATE_?KEY/i;

const FILES = ['school.yaml', 'city.yaml', 'province.yaml'] as const;

describe.skipIf(!haveCompose)('docker-compose config', () => {
  const cache = new Map<string, Promise<Compose>>();
  const load = (f: string) => {
    if (!cache.has(f)) cache.set(f, composeConfig(join(DOCKER, f)));
    return cache.get(f)!;
  };

  it.each(FILES)('%s is valid for Debian docker-compose with no variables set', async (f) => {
    const c = await load(f);
    expect(Object.keys(c.services).length).toBeGreaterThan(0);
  });

  it('a broken compose file is refused (the check can fail)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xiaoan-compose-'));
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'services:\n  a:\n    image: busybox\n    restart: sometimes-maybe\n    depends_on: 3\n');
    await expect(composeConfig(bad)).rejects.toThrow();
  });

  it.each(FILES)('%s: every Xiaoan service names its tier, mounts a config that passes `xiaoan config check` with its environment', async (f) => {
    const c = await load(f);
    const tiers: string[] = [];
    for (const [name, svc] of Object.entries(c.services)) {
      if (!isXiaoan(svc) || svc.entrypoint) continue; // the simulators run a script, not a tier
      const [tier, flag, configPath] = svc.command ?? [];
      expect(TIERS, `${f} ${name}: command ${JSON.stringify(svc.command)}`).toContain(tier);
      expect(flag, `${f} ${name}`).toBe('--config');
      tiers.push(tier!);
      const mount = (svc.volumes ?? []).find((v) => v.target === configPath);
      expect(mount, `${f} ${name}: ${configPath} must be mounted from the repository`).toBeDefined();
      expect(existsSync(mount!.source), `${f} ${name}: ${mount!.source}`).toBe(true);

      const env = Object.fromEntries(Object.entries(svc.environment ?? {}).map(([k, v]) => [k, v ?? '']));
      // every XIAOAN_ variable is a setting of that tier (or its _FILE form): a typo cannot hide
      const known = new Set(tierSettings(tier as Tier).flatMap((s) => [s.env, s.env + '_FILE']));
      for (const k of Object.keys(env).filter((k) => k.startsWith('XIAOAN_'))) {
        if (NOT_SETTINGS.test(k)) continue;
        expect(known.has(k), `${f} ${name}: ${k} is not a setting of tier ${tier} (xiaoan config env ${tier})`).toBe(true);
      }
      const secretsSeen: string[] = [];
      const r = await checkConfigFile(mount!.source, {
        env,
        expectTier: tier as Tier,
        readSecret: (file) => {
          secretsSeen.push(file);
          const secret = file.replace('/run/secrets/', '');
          const declared = (svc.secrets ?? []).map((s) => (typeof s === 'string' ? s : s.source));
          if (!file.startsWith('/run/secrets/') || !declared.includes(secret)) throw Object.assign(new Error('not mounted'), { code: 'ENOENT' });
          return `test-${secret}`;
        },
      });
      expect(r.problems, `${f} ${name}`).toEqual([]);
    }
    expect(tiers.length).toBeGreaterThan(0);
  });

  it.each(FILES)('%s: no secret in an environment value; every secret is a file under secrets/ documented in its README', async (f) => {
    const c = await load(f);
    const readme = await import('node:fs').then((fs) => fs.readFileSync(join(DOCKER, 'secrets/README.md'), 'utf8'));
    for (const [name, svc] of Object.entries(c.services)) {
      for (const [k, v] of Object.entries(svc.environment ?? {})) {
        if (SECRETISH.test(k) && !/(_FILE|__FILE)$/.test(k)) {
          throw new Error(`${f} ${name}: ${k} carries a secret in the environment (${v ? 'a value is set' : 'empty'}); use ${k}_FILE and a secret file`);
        }
      }
      for (const s of svc.secrets ?? []) {
        const id = typeof s === 'string' ? s : s.source;
        expect(c.secrets?.[id], `${f} ${name}: secret ${id} is not declared`).toBeDefined();
      }
    }
    for (const [id, s] of Object.entries(c.secrets ?? {})) {
      expect(s.file, `${f}: secret ${id}`).toBe(join(DOCKER, 'secrets', id));
      expect(readme, `secrets/README.md must say how to make ${id}`).toContain(id);
    }
  });

  it.each(FILES)('%s: Xiaoan containers run read-only without capabilities; admin UIs listen on 127.0.0.1 by default', async (f) => {
    const c = await load(f);
    for (const [name, svc] of Object.entries(c.services)) {
      if (isXiaoan(svc)) {
        expect(svc.read_only, `${f} ${name}`).toBe(true);
        expect(svc.cap_drop, `${f} ${name}`).toContain('ALL');
      }
      for (const p of svc.ports ?? []) {
        if ([18083, 3000, 1880, 8080, 8081].includes(p.target)) {
          expect(p.host_ip, `${f} ${name}: port ${p.target} must not listen on every interface by default`).toBe('127.0.0.1');
        }
      }
    }
  });

  it('school.yaml: the gateway keeps its buffer and registry on a volume at /var/lib/xiaoan; simulators are optional', async () => {
    const c = await load('school.yaml');
    const gw = c.services.gateway!;
    expect(gw.command?.[0]).toBe('edge');
    expect(gw.volumes?.some((v) => v.type === 'volume' && v.target === '/var/lib/xiaoan')).toBe(true);
    expect(gw.environment?.XIAOAN_UPLINK__PASSWORD_FILE).toBe('/run/secrets/uplink_password');
    const raw = parse(await import('node:fs').then((fs) => fs.readFileSync(join(DOCKER, 'school.yaml'), 'utf8')));
    expect(raw.services.simulators?.profiles).toEqual(['simulators']);
  });

  it('city.yaml: broker, TimescaleDB, InfluxDB 1.x, ingest replicas, dashboard, Grafana with provisioning, Node-RED with adminAuth', async () => {
    const c = await load('city.yaml');
    const s = c.services;
    expect(s.emqx?.image).toMatch(/^emqx\/emqx:5\./);
    expect(s.timescaledb?.image).toMatch(/^timescale\/timescaledb:/);
    expect(s.influxdb?.image).toMatch(/^influxdb:1\./);
    const workers = ingestWorkers(c);
    expect(workers.length).toBeGreaterThanOrEqual(2);
    for (const [, w] of workers) expect(w.command?.[0]).toBe('ingest');
    expect(s.dashboard?.command?.[0]).toBe('serve');
    const grafanaMounts = (s.grafana?.volumes ?? []).map((v) => `${v.source}:${v.target}`);
    expect(grafanaMounts).toContain(`${join(ROOT, 'dashboards/grafana')}:/var/lib/grafana/dashboards/xiaoan`);
    expect(grafanaMounts).toContain(`${join(DOCKER, 'grafana/provisioning')}:/etc/grafana/provisioning`);
    const provider = parse(await import('node:fs').then((fs) => fs.readFileSync(join(DOCKER, 'grafana/provisioning/dashboards/xiaoan.yaml'), 'utf8')));
    expect(provider.providers[0].options.path).toBe('/var/lib/grafana/dashboards/xiaoan');
    const nodeRedMounts = (s['node-red']?.volumes ?? []).map((v) => `${v.source}:${v.target}`);
    expect(nodeRedMounts).toContain(`${join(DOCKER, 'node-red/settings.cjs')}:/etc/node-red/settings.js`);
  });

  it('Node-RED refuses to start without its admin password hash; with it, adminAuth is on', () => {
    const require = createRequire(import.meta.url);
    const settingsFile = join(DOCKER, 'node-red/settings.cjs');
    const load = (env: Record<string, string>) => {
      const saved = { ...process.env };
      delete process.env.NODE_RED_ADMIN_PASSWORD_HASH;
      delete process.env.NODE_RED_CREDENTIAL_SECRET;
      Object.assign(process.env, env);
      delete require.cache[require.resolve(settingsFile)];
      try {
        return require(settingsFile);
      } finally {
        process.env = saved;
      }
    };
    const dir = mkdtempSync(join(tmpdir(), 'xiaoan-nodered-'));
    writeFileSync(join(dir, 'hash'), '$2b$08$abcdefghijklmnopqrstuuJ7Yy1v0cTgq0yVtP7Vb5u0Hq1q8G3xW\n');
    writeFileSync(join(dir, 'cred'), 'credential-secret\n');
    expect(() => load({ NODE_RED_CREDENTIAL_SECRET_FILE: join(dir, 'cred') })).toThrow(/NODE_RED_ADMIN_PASSWORD_HASH/);
    expect(() => load({ NODE_RED_ADMIN_PASSWORD_HASH_FILE: join(dir, 'missing'), NODE_RED_CREDENTIAL_SECRET_FILE: join(dir, 'cred') })).toThrow(/cannot read/);
    const settings = load({ NODE_RED_ADMIN_PASSWORD_HASH_FILE: join(dir, 'hash'), NODE_RED_CREDENTIAL_SECRET_FILE: join(dir, 'cred') });
    expect(settings.adminAuth.type).toBe('credentials');
    expect(settings.adminAuth.users[0].password).toMatch(/^\$2b\$/);
    expect(settings.credentialSecret).toBe('credential-secret');
  });

  it('province.yaml: three EMQX nodes seeded with each other, hash-by-client-id shared subscriptions, TimescaleDB, several ingest workers', async () => {
    const c = await load('province.yaml');
    const nodes = Object.entries(c.services).filter(([, s]) => /^emqx\/emqx:5\./.test(s.image ?? ''));
    expect(nodes.length).toBe(3);
    const names = nodes.map(([, s]) => s.environment?.EMQX_NODE_NAME);
    for (const [name, s] of nodes) {
      expect(s.environment?.EMQX_CLUSTER__DISCOVERY_STRATEGY, name).toBe('static');
      const seeds = String(s.environment?.EMQX_CLUSTER__STATIC__SEEDS).replace(/[[\]\s]/g, '').split(',');
      expect(seeds.sort(), name).toEqual([...names].sort());
      expect(s.environment?.EMQX_MQTT__SHARED_SUBSCRIPTION_STRATEGY, name).toBe('hash_clientid');
    }
    expect(c.services.timescaledb?.image).toMatch(/^timescale\/timescaledb:/);
    expect(ingestWorkers(c).length).toBeGreaterThanOrEqual(3);
    for (const [, w] of ingestWorkers(c)) expect(w.environment?.XIAOAN_REGION).toBe('37');
  });

  it('every ingest worker has a replica name of its own, so its broker sessions survive restarts and no two share a client id', async () => {
    for (const f of ['city.yaml', 'province.yaml']) {
      const names = ingestWorkers(await load(f)).map(([, w]) => w.environment?.XIAOAN_REPLICA);
      expect(names.every((n) => typeof n === 'string' && /^[A-Za-z0-9._-]+$/.test(n)), f).toBe(true);
      expect(new Set(names).size, f).toBe(names.length);
      for (const [, w] of ingestWorkers(await load(f))) expect(w.deploy?.replicas ?? 1, f).toBe(1);
    }
  });

  it('the secret-loading entry points stop when a secret file is missing instead of starting with an empty value', async () => {
    const c = await load('city.yaml');
    for (const name of ['emqx', 'influxdb']) {
      const script = c.services[name]!.entrypoint![2]!.replace(/\$\$/g, '$');
      const dir = mkdtempSync(join(tmpdir(), 'xiaoan-secrets-'));
      const local = script.replace(/\/run\/secrets\//g, dir + '/').replace(/exec .*$/, 'exec env');
      await expect(run('/bin/sh', ['-c', local]), name).rejects.toThrow();
      for (const m of script.matchAll(/\/run\/secrets\/([a-z_]+)/g)) writeFileSync(join(dir, m[1]!), `value-of-${m[1]}`);
      const { stdout } = await run('/bin/sh', ['-c', local]);
      expect(stdout, name).toMatch(/(EMQX_NODE__COOKIE=value-of-emqx_cookie|INFLUXDB_ADMIN_PASSWORD=value-of-influxdb_admin_password)/);
    }
  });

  it('every Grafana dashboard in dashboards/grafana/ uses a provisioned data source', async () => {
    const fs = await import('node:fs');
    const provisioned = parse(fs.readFileSync(join(DOCKER, 'grafana/provisioning/datasources/xiaoan.yaml'), 'utf8')) as {
      datasources: Array<{ uid: string; type: string }>;
    };
    const uids = new Set(provisioned.datasources.map((d) => d.uid));
    const dir = join(ROOT, 'dashboards/grafana');
    const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.json')) : [];
    if (files.length === 0) console.warn('deploy-compose: dashboards/grafana/ has no dashboards yet; nothing to match against the data sources');
    for (const f of files) {
      const text = fs.readFileSync(join(dir, f), 'utf8');
      const dash = JSON.parse(text) as unknown;
      const refs: string[] = [];
      const walk = (v: unknown) => {
        if (Array.isArray(v)) v.forEach(walk);
        else if (v && typeof v === 'object') {
          const o = v as Record<string, unknown>;
          if (o.datasource && typeof o.datasource === 'object' && typeof (o.datasource as { uid?: unknown }).uid === 'string') {
            refs.push((o.datasource as { uid: string }).uid);
          }
          Object.values(o).forEach(walk);
        }
      };
      walk(dash);
      for (const uid of refs) {
        if (uid.startsWith('$') || uid === '-- Grafana --' || uid === 'grafana') continue; // template variables, built-ins
        expect(uids.has(uid), `${f}: data source uid "${uid}" is not provisioned (${[...uids].join(', ')})`).toBe(true);
      }
    }
  });
});
