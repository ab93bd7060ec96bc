// `xiaoan ingest` started before its PostgreSQL: the process waits, saying what it waits for, and
// starts serving once a private cluster (initdb + pg_ctl on a port of its own) comes up after it.
import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMosquitto, startPostgresCluster, freePort, type Peer } from './support/peers.ts';

const ROOT = resolve(import.meta.dirname, '..');

async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 60_000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('xiaoan ingest waits for a PostgreSQL that starts after it', () => {
  let cluster: Awaited<ReturnType<typeof startPostgresCluster>>;
  let mosq: Peer;
  let proc: ChildProcess | undefined;
  beforeAll(async () => {
    cluster = await startPostgresCluster();
    await cluster.createDatabase('xiaoan');
    await cluster.stop();
    mosq = await startMosquitto();
  });
  afterAll(async () => {
    if (proc && proc.exitCode === null) proc.kill('SIGKILL');
    await mosq?.close();
    await cluster?.close();
  });

  it('logs that it waits, then starts and reports healthy once the database is up; SIGTERM ends it cleanly', async () => {
    const port = await freePort();
    proc = spawn(process.execPath, [join(ROOT, 'bin/xiaoan.js'), 'ingest', '--no-rules'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH,
        XIAOAN_DATABASE__URL: cluster.adminUrl.replace(/\/postgres$/, '/xiaoan'),
        XIAOAN_BROKER__URL: mosq.url,
        XIAOAN_REGION: '3701',
        XIAOAN_REPLICA: 'late-db',
        XIAOAN_HTTP__PORT: String(port),
        XIAOAN_HTTP__HOST: '127.0.0.1',
        XIAOAN_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    proc.stderr!.on('data', (d) => (stderr += d.toString()));
    proc.stdout!.on('data', (d) => (stderr += d.toString()));
    await until('the wait to be logged twice (backoff)', () => (stderr.match(/waiting for PostgreSQL/g) ?? []).length >= 2, 30_000);
    expect(proc.exitCode).toBeNull(); // still there, not exited
    expect(stderr).toMatch(/ECONNREFUSED/);
    await cluster.start();
    await until('healthy', async () => {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/healthz`);
        return r.status === 200;
      } catch {
        return false;
      }
    });
    expect(stderr).toMatch(/database reachable; starting/);
    const exited = new Promise<number | null>((r) => proc!.once('exit', (code) => r(code)));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
