// `xiaoan config check` and the configuration loader: the tier comes from the file, every problem
// is reported at once as `path: message`, environment variables override the file by one naming
// rule, secrets come from files and are never printed.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../main.ts';
import type { CommandIo } from '../command.ts';
import { settingsMarkdown, TABLE_BEGIN, TABLE_END } from '../commands/config.ts';
import {
  checkConfigText,
  ConfigError,
  configFromEnv,
  databaseConnectionUrl,
  envName,
  formatProblem,
  loadConfig,
  tierSettings,
  TIERS,
} from './index.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'xiaoan-config-'));
const file = (name: string, text: string) => {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
};

const GOOD_INGEST = `tier: ingest
region: "3701"
database:
  url: postgres://xiaoan@db:5432/xiaoan
broker:
  url: mqtt://emqx:1883
`;

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CommandIo = { out: (l) => out.push(l), err: (l) => err.push(l), env };
  const code = await main(args, io);
  return { code, out, err };
}

describe('naming rule', () => {
  it('XIAOAN_ + path levels in UPPER_SNAKE_CASE joined by a double underscore', () => {
    expect(envName(['uplink', 'password'])).toBe('XIAOAN_UPLINK__PASSWORD');
    expect(envName(['deviceBroker', 'port'])).toBe('XIAOAN_DEVICE_BROKER__PORT');
    expect(envName(['buffer', 'maxRecords'])).toBe('XIAOAN_BUFFER__MAX_RECORDS');
    expect(envName(['dataDir'])).toBe('XIAOAN_DATA_DIR');
    expect(envName(['broker', 'tls', 'rejectUnauthorized'])).toBe('XIAOAN_BROKER__TLS__REJECT_UNAUTHORIZED');
  });

  it('no two settings of a tier share a variable', () => {
    for (const t of TIERS) {
      const names = tierSettings(t).map((s) => s.env);
      expect(new Set(names).size, t).toBe(names.length);
    }
  });
});

describe('checkConfigText', () => {
  it('reports every problem at once, each as path: message with its line', () => {
    const text = `tier: ingest
region: "3700"
shareGroup: "a/b"
database:
  url: mysql://x
broker:
  urll: mqtt://emqx:1883
http: { port: 70000 }
influx: { url: ftp://x }
`;
    const r = checkConfigText(text, 'ingest.yaml', { env: {} });
    expect(r.tier).toBe('ingest');
    expect(r.config).toBeUndefined();
    const lines = r.problems.map(formatProblem);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^region: city "3700" .* \(line 2\)$/),
        expect.stringMatching(/^shareGroup: .* \(line 3\)$/),
        'database.url: "mysql://x" has scheme "mysql:", which is not accepted; accepted schemes: postgres:, postgresql:, pglite: (e.g. postgres://USER@HOST:5432/DB, pglite:DIR, pglite:memory) (line 5)',
        expect.stringMatching(/^broker\.url: required \(string\) but missing/),
        'broker.urll: unknown setting; did you mean "url"? (line 7)',
        expect.stringMatching(/^http\.port: .*65535.* \(line 8\)$/),
        expect.stringMatching(/^influx\.url: "ftp:\/\/x" has scheme "ftp:", which is not accepted; accepted schemes: http:, https: .* \(line 9\)$/),
      ]),
    );
    expect(lines.length).toBe(7);
  });

  it('fills defaults for a good file', () => {
    const r = checkConfigText(GOOD_INGEST, 'ingest.yaml', { env: {} });
    expect(r.problems).toEqual([]);
    expect(r.config).toMatchObject({ region: '3701', shareGroup: 'xiaoan-ingest', http: { port: 8082, host: '0.0.0.0' }, broker: { username: 'svc-ingest' } });
  });

  it('names the tier problem: missing, unknown, or not the one the command runs', () => {
    expect(checkConfigText('region: "37"\n', 'x.yaml', { env: {} }).problems.map(formatProblem)).toEqual([
      'tier: missing; 请注明层级 add `tier: edge` (one of edge, ingest, serve, demo)',
    ]);
    expect(checkConfigText('tier: broker\n', 'x.yaml', { env: {} }).problems.map(formatProblem)).toEqual([
      'tier: "broker" is not a tier; use one of edge, ingest, serve, demo (line 1)',
    ]);
    expect(checkConfigText(GOOD_INGEST, 'x.yaml', { env: {}, expectTier: 'serve' }).problems[0]!.message).toMatch(/configures "ingest".*`xiaoan serve`/);
  });

  it('reports YAML syntax errors with their line, and empty files', () => {
    const r = checkConfigText('tier: ingest\nbroker:\n  url: [unclosed\n', 'x.yaml', { env: {} });
    expect(r.problems.length).toBeGreaterThan(0);
    expect(r.problems[0]!.path).toBe('(file)');
    expect(r.problems[0]!.message).toMatch(/^YAML: /);
    expect(r.problems[0]!.line).toBeGreaterThan(0);
    expect(checkConfigText('tier: ingest\ntier: serve\n', 'x.yaml', { env: {} }).problems[0]!.message).toMatch(/YAML: .*unique/i);
    expect(checkConfigText('', 'x.yaml', { env: {} }).problems[0]!.message).toMatch(/empty/);
    expect(checkConfigText('- a\n- b\n', 'x.yaml', { env: {} }).problems[0]!.message).toMatch(/mapping/);
  });

  it('validates edge files with the gateway\'s own schema', () => {
    const text = readFileSync(join(ROOT, 'docker/config/school/edge.yaml'), 'utf8');
    expect(checkConfigText(text, 'edge.yaml', { env: {} }).problems).toEqual([]);
    const bad = checkConfigText(text.replace('county: "370102"', 'county: "370103"'), 'edge.yaml', { env: {} });
    expect(bad.problems.map((p) => p.path)).toContain('site');
  });
});

describe('hints that say what is wrong', () => {
  it('a region code YAML read as a number is shown as written, with the quoted form to use', () => {
    const r = checkConfigText('tier: ingest\nregion: 370102\ndatabase: { url: pglite:memory }\nbroker: { url: mqtt://b:1883 }\n', 'i.yaml', { env: {} });
    expect(r.problems.map(formatProblem)).toEqual([
      'region: expected text, but YAML read 370102 as a number (region and org codes are text: GB/T 2260, school ids); 请加引号 quote it: region: "370102" (line 2)',
    ]);
    // a leading zero YAML dropped is shown as it was written
    const e = checkConfigText('tier: edge\ngatewayId: gw-1\ncounty: 0370102\nsite: 37/3701/370102/3737000001\nuplink: { url: mqtt://b:1883 }\ndataDir: /tmp/x\n', 'e.yaml', { env: {} });
    expect(e.problems.map(formatProblem)).toContain('county: expected text, but YAML read 0370102 as a number (region and org codes are text: GB/T 2260, school ids); 请加引号 quote it: county: "0370102" (line 3)');
  });

  it('a URL error names what was given and every accepted scheme, never the password', () => {
    const r = checkConfigText('tier: ingest\ndatabase: { url: "mysql://u:hunter22@db/x" }\nbroker: { url: mqtt://b:1883 }\n', 'i.yaml', { env: {} });
    const line = r.problems.map(formatProblem)[0]!;
    expect(line).toMatch(/^database\.url: "mysql:\/\/u:\*\*\*@db\/x" has scheme "mysql:", which is not accepted; accepted schemes: postgres:, postgresql:, pglite: /);
    expect(line).not.toContain('hunter22');
    expect(line.match(/database\.url/g)).toHaveLength(1);
  });

  it('reports XIAOAN_* variables that configure nothing, with the known ones closest to each', async () => {
    const good = file('good-env.yaml', GOOD_INGEST);
    const env = { XIAOAN_BROKR__URL: 'mqtt://x:1883', XIAOAN_DATABASE_URL: 'postgres://x@y/z', XIAOAN_HTTP__PORT: '9000', XIAOAN_TEST_PG: 'ignored' };
    const r = await cli(['config', 'check', good], env);
    expect(r.code).toBe(0);
    const err = r.err.join('\n');
    expect(err).toMatch(/2 XIAOAN_\* environment variables configure nothing/);
    expect(err).toContain('XIAOAN_BROKR__URL — did you mean XIAOAN_BROKER__URL?');
    expect(err).toMatch(/XIAOAN_DATABASE_URL — did you mean XIAOAN_DATABASE__URL/);
    expect(err).not.toContain('XIAOAN_HTTP__PORT —');
    expect(err).not.toContain('XIAOAN_TEST_PG');
    const json = JSON.parse((await cli(['config', 'check', good, '--json'], env)).out[0]!);
    expect(json.unknownEnv.map((u: { name: string }) => u.name)).toEqual(['XIAOAN_BROKR__URL', 'XIAOAN_DATABASE_URL']);
    // nothing to say about a clean environment
    expect((await cli(['config', 'check', good], { XIAOAN_HTTP__PORT: '9000' })).err.join('\n')).not.toMatch(/configure nothing/);
  });
});

describe('environment overrides', () => {
  it('override file values, coerced to the setting\'s type; _FILE reads a secret file', () => {
    const secret = file('broker_password', 's3cret-from-file\n');
    const r = checkConfigText(GOOD_INGEST, 'ingest.yaml', {
      env: {
        XIAOAN_REGION: '3702',
        XIAOAN_HTTP__PORT: '9090',
        XIAOAN_BROKER__TLS__REJECT_UNAUTHORIZED: 'false',
        XIAOAN_RULES__DIRS: '["a","b"]',
        XIAOAN_BROKER__PASSWORD_FILE: secret,
        XIAOAN_DATABASE__PASSWORD: 'db-pass',
        XIAOAN_UNRELATED: 'ignored',
      },
    });
    expect(r.problems).toEqual([]);
    expect(r.config).toMatchObject({
      region: '3702',
      http: { port: 9090 },
      broker: { password: 's3cret-from-file', tls: { rejectUnauthorized: false } },
      rules: { dirs: ['a', 'b'] },
      database: { password: 'db-pass' },
    });
    expect(r.applied.map((a) => a.env).sort()).toEqual([
      'XIAOAN_BROKER__PASSWORD_FILE', 'XIAOAN_BROKER__TLS__REJECT_UNAUTHORIZED', 'XIAOAN_DATABASE__PASSWORD',
      'XIAOAN_HTTP__PORT', 'XIAOAN_REGION', 'XIAOAN_RULES__DIRS',
    ]);
  });

  it('a bad value from the environment is reported with the variable it came from, together with the file\'s problems', () => {
    const r = checkConfigText(GOOD_INGEST.replace('mqtt://emqx:1883', 'ftp://emqx'), 'ingest.yaml', {
      env: { XIAOAN_HTTP__PORT: 'eighty', XIAOAN_DATABASE__PASSWORD_FILE: join(dir, 'no-such-secret') },
    });
    const lines = r.problems.map(formatProblem);
    expect(lines).toEqual(expect.arrayContaining([
      expect.stringMatching(/^http\.port: .*expected number.* \(from XIAOAN_HTTP__PORT\)$/),
      expect.stringMatching(/^database\.password: XIAOAN_DATABASE__PASSWORD_FILE names ".*no-such-secret", which cannot be read \(ENOENT\).*\(from XIAOAN_DATABASE__PASSWORD_FILE\)$/),
      expect.stringMatching(/^broker\.url: .* \(line 6\)$/),
    ]));
  });

  it('a whole configuration can come from the environment (containers without a file)', () => {
    const cfg = configFromEnv('serve', { XIAOAN_DATABASE__URL: 'postgres://x@db/xiaoan', XIAOAN_HTTP__PORT: '8088' });
    expect(cfg.http.port).toBe(8088);
    expect(() => configFromEnv('serve', {})).toThrow(ConfigError);
  });
});

describe('loadConfig (what tier commands call)', () => {
  it('returns the validated config or throws one error listing every problem', async () => {
    const good = file('serve.yaml', 'tier: serve\ndatabase: { url: "pglite:memory" }\n');
    expect((await loadConfig(good, 'serve', { env: {} })).http.port).toBe(8080);
    const bad = file('bad-serve.yaml', 'tier: serve\ndatabase: { url: nope }\nhttp: { port: -1, hots: x }\n');
    const e = await loadConfig(bad, 'serve', { env: {} }).catch((x) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message.split('\n')).toEqual([
      expect.stringContaining('has 3 configuration problems'),
      expect.stringMatching(/^ {2}database\.url: /),
      expect.stringMatching(/^ {2}http\.port: /),
      '  http.hots: unknown setting; did you mean "host"? (line 3)',
    ]);
  });

  it('builds the connection URL with the password from its own setting', () => {
    expect(databaseConnectionUrl({ url: 'postgres://xiaoan@db:5432/xiaoan', password: 'p@ss/word' })).toBe('postgres://xiaoan:p%40ss%2Fword@db:5432/xiaoan');
    expect(databaseConnectionUrl({ url: 'pglite:memory', password: 'x' })).toBe('pglite:memory');
  });
});

describe('xiaoan config check FILE', () => {
  it('exits 0 on a good file, 1 listing every problem on a bad one', async () => {
    const good = file('good.yaml', GOOD_INGEST);
    const ok = await cli(['config', 'check', good]);
    expect(ok.code).toBe(0);
    expect(ok.err.join('\n')).toMatch(/ok — tier ingest/);

    const bad = file('bad.yaml', 'tier: ingest\ndatabase: {}\nbroker: { url: x }\nextra: 1\n');
    const r = await cli(['config', 'check', bad]);
    expect(r.code).toBe(1);
    expect(r.out).toEqual([
      'database.url: required (string) but missing (line 2)',
      expect.stringMatching(/^broker\.url: "x" is not a usable URL; accepted schemes: mqtt:, mqtts:, ws:, wss:, tcp:, ssl: .* \(line 3\)$/),
      'extra: unknown setting; known here: region, replica, shareGroup, database, broker, http, influx, rules, delivery, logLevel (line 4)',
    ]);
    expect(r.err.join('\n')).toMatch(/3 处错误 problems \(tier ingest\)/);
  });

  it('--json gives a machine-readable answer; --print never shows a secret', async () => {
    const good = file('print.yaml', GOOD_INGEST);
    const secret = file('pw', 'very-secret-value');
    const env = { XIAOAN_BROKER__PASSWORD_FILE: secret, XIAOAN_DATABASE__URL: 'postgres://xiaoan:dbpass@db/xiaoan' };
    const r = await cli(['config', 'check', good, '--json', '--print'], env);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out[0]!);
    expect(j).toMatchObject({ ok: true, tier: 'ingest', problems: [] });
    expect(j.env).toContain('XIAOAN_BROKER__PASSWORD_FILE');
    const text = r.out.join('\n') + r.err.join('\n');
    expect(text).not.toContain('very-secret-value');
    expect(text).not.toContain('dbpass');
    const p = await cli(['config', 'check', good, '--print'], env);
    expect(p.out.join('\n')).not.toMatch(/very-secret-value|dbpass/);
  });

  it('--no-env ignores the environment; a missing file and a missing argument are clear', async () => {
    const good = file('noenv.yaml', GOOD_INGEST);
    expect((await cli(['config', 'check', good, '--no-env'], { XIAOAN_HTTP__PORT: 'x' })).code).toBe(0);
    expect((await cli(['config', 'check', good], { XIAOAN_HTTP__PORT: 'x' })).code).toBe(1);
    const missing = await cli(['config', 'check', join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(1);
    expect(missing.out[0]).toMatch(/^\(file\): 配置文件不存在 .*nope\.yaml does not exist$/);
    expect((await cli(['config', 'check'])).code).toBe(2);
  });

  it('checks every configuration file shipped in docker/config', async () => {
    for (const f of ['school/edge.yaml', 'city/ingest.yaml', 'city/serve.yaml', 'province/ingest.yaml', 'province/serve.yaml']) {
      const r = await cli(['config', 'check', join(ROOT, 'docker/config', f)]);
      expect(r.code, `${f}: ${r.out.join('\n')}`).toBe(0);
    }
  });
});

describe('xiaoan config env', () => {
  it('lists a tier\'s settings with their variables, secrets marked, and refuses an unknown tier', async () => {
    const r = await cli(['config', 'env', 'ingest']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('ingest\tbroker.password\tXIAOAN_BROKER__PASSWORD(_FILE)\t—');
    expect(r.out).toContain('ingest\thttp.port\tXIAOAN_HTTP__PORT\t8082');
    expect((await cli(['config', 'env', 'broker'])).code).toBe(2);
    const md = await cli(['config', 'env', '--markdown']);
    expect(md.out.join('\n')).toBe(settingsMarkdown());
  });
});

describe('docs/configuration.md', () => {
  it('carries the settings table generated from the schemas (regenerate: node bin/xiaoan.js config env --write docs/configuration.md)', () => {
    const doc = readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8');
    const table = doc.slice(doc.indexOf(TABLE_BEGIN) + TABLE_BEGIN.length, doc.indexOf(TABLE_END)).trim();
    for (const t of TIERS) {
      for (const s of tierSettings(t)) {
        expect(table, `${t} ${s.path} is missing: node bin/xiaoan.js config env --write docs/configuration.md`).toContain(`| ${t} | \`${s.path}\` | \`${s.env}\``);
      }
    }
    expect(table, 'the table is out of date: node bin/xiaoan.js config env --write docs/configuration.md').toBe(settingsMarkdown());
  });

  it('--write replaces only the table between its markers', async () => {
    const f = file('doc.md', `# title\n\n${TABLE_BEGIN}\nold table\n${TABLE_END}\n\ntail\n`);
    expect((await cli(['config', 'env', '--write', f])).code).toBe(0);
    const text = readFileSync(f, 'utf8');
    expect(text.startsWith(`# title\n\n${TABLE_BEGIN}\n| tier | file setting |`)).toBe(true);
    expect(text.endsWith(`${TABLE_END}\n\ntail\n`)).toBe(true);
    expect(text).not.toContain('old table');
  });
});
