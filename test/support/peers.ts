// Throwaway third-party servers for ingest tests and benchmarks, each on a free port in a temp
// directory, never the shared ones (1883, 5432, 8086): Mosquitto, a PostgreSQL cluster of our own
// (initdb + pg_ctl, so a test may stop and restart it), and InfluxDB 1.x.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, chmodSync, chownSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../device-drivers/index.ts';

export { freePort };

async function waitForPort(port: number, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => { c.destroy(); resolve(true); });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function waitExit(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()));
}

export interface Peer {
  port: number;
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** stop for good and remove the temp directory */
  close(): Promise<void>;
}

/** A server process of ours that can be stopped and started again on the same port and directory. */
async function processPeer(o: { port: number; url: string; dir: string; command: string; args: string[]; readyMs?: number }): Promise<Peer> {
  let proc: ChildProcess | null = null;
  const peer: Peer = {
    port: o.port,
    url: o.url,
    async start() {
      proc = spawn(o.command, o.args, { stdio: 'ignore' });
      await waitForPort(o.port, o.readyMs);
    },
    async stop() {
      if (!proc) return;
      const p = proc;
      proc = null;
      p.kill('SIGTERM');
      await waitExit(p);
    },
    async close() {
      await peer.stop();
      rmSync(o.dir, { recursive: true, force: true });
    },
  };
  await peer.start();
  return peer;
}

/** Mosquitto 2 on a free port, anonymous, MQTT 5 capable, with persistence in a temp dir. */
export async function startMosquitto(opts: { port?: number; persistence?: boolean } = {}): Promise<Peer> {
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-mosq-'));
  chmodSync(dir, 0o777);
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(conf, [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    `persistence ${opts.persistence ? 'true' : 'false'}`,
    `persistence_location ${dir}/`,
    'max_queued_messages 1000000',
    'log_dest none',
    '',
  ].join('\n'));
  return processPeer({ port, url: `mqtt://127.0.0.1:${port}`, dir, command: 'mosquitto', args: ['-c', conf] });
}

/**
 * A PostgreSQL cluster of our own (initdb into a temp dir, pg_ctl on a free port, trust auth, user
 * postgres). Root cannot run the server, so it runs as the postgres system user.
 */
export async function startPostgresCluster(): Promise<Peer & { adminUrl: string; createDatabase(name: string): Promise<string> }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-pg-'));
  const data = join(dir, 'data');
  const asPostgres = process.getuid?.() === 0;
  if (asPostgres) {
    const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    chownSync(dir, Number(r.stdout.trim()), Number(g.stdout.trim()));
  }
  const run = (args: string[]) => {
    const cmd = asPostgres ? 'su' : args[0]!;
    const argv = asPostgres ? ['-s', '/bin/sh', 'postgres', '-c', args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')] : args.slice(1);
    const r = spawnSync(cmd, argv, { encoding: 'utf8', cwd: tmpdir() });
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  };
  const bin = (name: string) => {
    const r = spawnSync('sh', ['-c', `ls /usr/lib/postgresql/*/bin/${name} 2>/dev/null | sort -V | tail -1`], { encoding: 'utf8' });
    return r.stdout.trim() || name;
  };
  run([bin('initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C']);
  const opts = `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c fsync=off -c max_connections=50 -c shared_buffers=64MB`;
  const peer = {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    adminUrl: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async start() {
      run([bin('pg_ctl'), '-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', 'start']);
    },
    async stop() {
      run([bin('pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']);
    },
    /** creates a database in the cluster and returns its URL */
    async createDatabase(name: string) {
      const pgMod = (await import('pg')).default;
      const admin = new pgMod.Client({ connectionString: peer.adminUrl });
      await admin.connect();
      try {
        await admin.query(`create database ${name}`);
      } finally {
        await admin.end();
      }
      return peer.adminUrl.replace(/\/postgres$/, `/${name}`);
    },
    async close() {
      try { run([bin('pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']); } catch { /* already stopped */ }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await peer.start();
  return peer;
}

/** InfluxDB 1.x on free ports with a temp config and data dir. */
export async function startInfluxd(): Promise<Peer> {
  const port = await freePort();
  const rpc = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-influx-'));
  const conf = join(dir, 'influxdb.conf');
  writeFileSync(conf, `reporting-enabled = false
bind-address = "127.0.0.1:${rpc}"
[meta]
  dir = "${dir}/meta"
  logging-enabled = false
[data]
  dir = "${dir}/data"
  wal-dir = "${dir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:${port}"
  log-enabled = false
[logging]
  level = "error"
[monitor]
  store-enabled = false
`);
  return processPeer({ port, url: `http://127.0.0.1:${port}`, dir, command: 'influxd', args: ['-config', conf], readyMs: 30_000 });
}
