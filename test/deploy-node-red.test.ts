// Node-RED as docker/city.yaml runs it: our settings (docker/node-red/settings.cjs), Xiaoan's nodes
// from rules/node-red/, and the admin login always on. A real Node-RED 4 process, no mocks.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const require = createRequire(import.meta.url);
const RED = require.resolve('node-red/red.js');
const PASSWORD = 'admin-password-for-test';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function startNodeRed(env: Record<string, string>): { proc: ChildProcess; output: () => string; exited: Promise<number | null> } {
  let out = '';
  const proc = spawn(process.execPath, [RED, '--settings', join(ROOT, 'docker/node-red/settings.cjs')], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { proc, output: () => out, exited };
}

describe('Node-RED with Xiaoan nodes and adminAuth', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-node-red-'));
  let port = 0;
  let red: ReturnType<typeof startNodeRed>;

  beforeAll(async () => {
    const bcrypt = require('bcryptjs') as { hashSync(p: string, rounds: number): string };
    writeFileSync(join(dir, 'admin_hash'), bcrypt.hashSync(PASSWORD, 8) + '\n');
    writeFileSync(join(dir, 'credential_secret'), 'a-credential-secret\n');
    port = await freePort();
    red = startNodeRed({
      PORT: String(port),
      NODE_RED_USER_DIR: join(dir, 'data'),
      NODE_RED_NODES_DIR: join(ROOT, 'rules/node-red'),
      NODE_RED_ADMIN_PASSWORD_HASH_FILE: join(dir, 'admin_hash'),
      NODE_RED_CREDENTIAL_SECRET_FILE: join(dir, 'credential_secret'),
    });
    const deadline = Date.now() + 45_000;
    for (;;) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/`);
        if (r.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`Node-RED did not start:\n${red.output()}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }, 60_000);

  afterAll(async () => {
    red?.proc.kill('SIGTERM');
    await red?.exited;
  });

  it('refuses the admin API without a login', async () => {
    expect((await fetch(`http://127.0.0.1:${port}/flows`)).status).toBe(401);
    expect((await fetch(`http://127.0.0.1:${port}/nodes`, { headers: { accept: 'application/json' } })).status).toBe(401);
  });

  it('refuses a wrong password and logs in with the right one; Xiaoan\'s nodes are loaded', async () => {
    const token = (password: string) =>
      fetch(`http://127.0.0.1:${port}/auth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ client_id: 'node-red-admin', grant_type: 'password', scope: '*', username: 'admin', password }),
      });
    expect((await token('wrong-password')).status).toBe(403);
    const ok = await token(PASSWORD);
    expect(ok.status).toBe(200);
    const { access_token } = (await ok.json()) as { access_token: string };
    const nodes = (await (await fetch(`http://127.0.0.1:${port}/nodes`, {
      headers: { accept: 'application/json', authorization: `Bearer ${access_token}` },
    })).json()) as Array<{ id: string; types: string[]; enabled: boolean; err?: string }>;
    const xiaoan = nodes.find((n) => n.id.endsWith('/xiaoan'));
    expect(xiaoan, JSON.stringify(nodes.map((n) => n.id))).toBeDefined();
    expect(xiaoan!.err).toBeUndefined();
    expect(xiaoan!.types).toEqual(expect.arrayContaining(['xiaoan-readings', 'xiaoan-alerts', 'xiaoan-raise', 'xiaoan-ack']));
  });

  it('will not start without the admin password hash', async () => {
    const r = startNodeRed({
      PORT: String(await freePort()),
      NODE_RED_USER_DIR: join(dir, 'data2'),
      NODE_RED_CREDENTIAL_SECRET_FILE: join(dir, 'credential_secret'),
    });
    const timer = setTimeout(() => r.proc.kill('SIGKILL'), 30_000);
    const code = await r.exited;
    clearTimeout(timer);
    expect(code).not.toBe(0);
    expect(r.output()).toMatch(/NODE_RED_ADMIN_PASSWORD_HASH is not set/);
  }, 40_000);
});
