// The gateway as a systemd service: `systemd-analyze verify` accepts the unit with no warning
// at all (verify exits 0 even on unknown keys, so any output fails the test), the unit runs as
// its own user, restarts on failure and keeps its state in /var/lib/xiaoan; the install script
// parses and its dry run walks every step.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
const UNIT_FILE = join(ROOT, 'deploy/systemd/xiaoan-gateway.service');
const UNIT = readFileSync(UNIT_FILE, 'utf8');
const INSTALL = join(ROOT, 'deploy/install-gateway.sh');
const ANALYZE = '/usr/bin/systemd-analyze';
const haveAnalyze = existsSync(ANALYZE);
if (!haveAnalyze) console.warn(`deploy-systemd: ${ANALYZE} is absent (apt-get install systemd; .ci/run installs it) — unit verification skipped`);

/** The unit's settings as [section, key, value] triples. */
function unitSettings(text: string): Array<[string, string, string]> {
  let section = '';
  const out: Array<[string, string, string]> = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#') || t.startsWith(';')) continue;
    const s = /^\[(\w+)\]$/.exec(t);
    if (s) section = s[1]!;
    else {
      const eq = t.indexOf('=');
      out.push([section, t.slice(0, eq), t.slice(eq + 1)]);
    }
  }
  return out;
}
const get = (key: string) => unitSettings(UNIT).filter(([, k]) => k === key).map(([, , v]) => v);

/**
 * verify checks that ExecStart's binary exists on this machine; the installed paths
 * (/opt/xiaoan/node, /opt/xiaoan/app) exist only on a gateway, so they point at this checkout's
 * Node and sources for the check. Everything else is verified as written.
 */
async function verify(text: string): Promise<{ code: number; output: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-unit-'));
  const file = join(dir, 'xiaoan-gateway.service');
  writeFileSync(file, text.replaceAll('/opt/xiaoan/node/bin/node', process.execPath).replaceAll('/opt/xiaoan/app', ROOT));
  try {
    const { stdout, stderr } = await run(ANALYZE, ['verify', '--man=no', file], { env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } });
    return { code: 0, output: (stdout + stderr).trim() };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, output: (err.stdout + err.stderr).trim() };
  }
}

describe.skipIf(!haveAnalyze)('systemd-analyze verify', () => {
  it('accepts deploy/systemd/xiaoan-gateway.service without a single warning', async () => {
    expect(await verify(UNIT)).toEqual({ code: 0, output: '' });
  });

  it('would catch a mistake (the check can fail)', async () => {
    const r1 = await verify(UNIT.replace('Restart=on-failure', 'Restart=sometimes'));
    expect(r1.output).toMatch(/restart/i);
    const r2 = await verify(UNIT.replace('[Install]', 'ProtectEverything=yes\n\n[Install]'));
    expect(r2.output).toMatch(/Unknown key/);
  });
});

describe('the gateway unit', () => {
  it('runs as its own user, restarts on failure, keeps buffer and registry under /var/lib/xiaoan', () => {
    expect(get('User')).toEqual(['xiaoan']);
    expect(get('Group')).toEqual(['xiaoan']);
    expect(get('Restart')).toEqual(['on-failure']);
    expect(get('StateDirectory')).toEqual(['xiaoan']);
    expect(get('Environment')).toContain('XIAOAN_DATA_DIR=/var/lib/xiaoan');
    expect(get('ExecStart')[0]).toMatch(/bin\/xiaoan\.js edge --config \/etc\/xiaoan\/edge\.yaml$/);
    expect(get('ExecStartPre')[0]).toMatch(/config check --tier edge \/etc\/xiaoan\/edge\.yaml$/);
    expect(get('NoNewPrivileges')).toEqual(['yes']);
    expect(get('ProtectSystem')).toEqual(['strict']);
    expect(get('WantedBy')).toEqual(['multi-user.target']);
  });

  it('takes the uplink password as a credential, never as a value in the unit', () => {
    expect(get('LoadCredential')).toEqual(['uplink_password:/etc/xiaoan/credentials/uplink_password']);
    expect(get('Environment')).toContain('XIAOAN_UPLINK__PASSWORD_FILE=%d/uplink_password');
    for (const [, k, v] of unitSettings(UNIT)) {
      if (k === 'Environment') expect(v, v).not.toMatch(/(PASSWORD|SECRET|TOKEN)=(?!%d\/)/);
    }
  });
});

describe('deploy/install-gateway.sh', () => {
  it('is valid bash', async () => {
    await run('bash', ['-n', INSTALL]);
  });

  it('a dry run walks every step in order without changing anything', async () => {
    const { stdout } = await run('bash', [INSTALL, '--dry-run', '--config', join(ROOT, 'docker/config/school/edge.yaml')]);
    const steps = [
      /\+ adduser --system --group --home \/var\/lib\/xiaoan --no-create-home --shell \/usr\/sbin\/nologin xiaoan/,
      /\+ usermod -a -G dialout xiaoan/,
      /npm ci --omit=dev --no-audit --no-fund --prefix \/opt\/xiaoan\/app\.new/,
      /\+ write \/etc\/xiaoan\/edge\.yaml \(mode 0640, owner root:xiaoan\)/,
      /\+ write \/etc\/xiaoan\/credentials\/uplink_password \(mode 0600, owner root:root\)/,
      /\+ install -d -m 0750 -o xiaoan -g xiaoan \/var\/lib\/xiaoan/,
      /\+ write \/etc\/systemd\/system\/xiaoan-gateway\.service/,
      /config check --tier edge '\/etc\/xiaoan\/edge\.yaml'/,
      /\+ systemctl enable xiaoan-gateway\.service/,
      /\+ systemctl restart xiaoan-gateway\.service/,
    ];
    let at = 0;
    for (const step of steps) {
      const m = step.exec(stdout.slice(at));
      expect(m, `step ${step} (after position ${at})`).not.toBeNull();
      at += m!.index + m![0].length;
    }
  });

  it('refuses a configuration that is not a gateway\'s', async () => {
    await expect(run('bash', [INSTALL, '--dry-run', '--config', join(ROOT, 'docker/config/city/ingest.yaml')])).rejects.toMatchObject({
      stderr: expect.stringContaining('must say `tier: edge`'),
    });
  });

  it('refuses an unknown option', async () => {
    await expect(run('bash', [INSTALL, '--dry-run', '--frobnicate'])).rejects.toMatchObject({ stderr: expect.stringContaining('unknown option --frobnicate') });
  });
});

describe('the ingest worker unit (xiaoan-ingest@.service)', () => {
  const INGEST = readFileSync(join(ROOT, 'deploy/systemd/xiaoan-ingest@.service'), 'utf8');
  const ingestGet = (key: string) => unitSettings(INGEST).filter(([, k]) => k === key).map(([, , v]) => v);

  it.skipIf(!haveAnalyze)('passes systemd-analyze verify as an instance, without a warning', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xiaoan-unit-'));
    const file = join(dir, 'xiaoan-ingest@a.service');
    writeFileSync(file, INGEST.replaceAll('/opt/xiaoan/node/bin/node', process.execPath).replaceAll('/opt/xiaoan/app', ROOT));
    const { stdout, stderr } = await run(ANALYZE, ['verify', '--man=no', file], { env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } });
    expect((stdout + stderr).trim()).toBe('');
  });

  it('names each worker by its instance, after the environment file, so two instances never share a client id', () => {
    const lines = INGEST.split('\n');
    const envFile = lines.findIndex((l) => l.startsWith('EnvironmentFile='));
    const replica = lines.findIndex((l) => l === 'Environment=XIAOAN_REPLICA=%i');
    expect(replica).toBeGreaterThan(envFile);
    expect(ingestGet('ExecStart')[0]).toMatch(/bin\/xiaoan\.js ingest --config \/etc\/xiaoan\/ingest\.yaml$/);
    expect(ingestGet('ExecStartPre')[0]).toMatch(/config check --tier ingest \/etc\/xiaoan\/ingest\.yaml$/);
    expect(ingestGet('Restart')).toEqual(['on-failure']);
    expect(ingestGet('User')).toEqual(['xiaoan']);
  });
});
