// One worker per client id. Two workers under one MQTT client id would take each other's session
// over in turns (the broker drops the older connection), each losing what was in flight. A worker
// therefore claims its id before it connects: on PostgreSQL a session-level advisory lock held on a
// connection of its own for the worker's life (PostgreSQL releases it when the process dies, so a
// crashed worker never blocks its successor); on PGlite, which only one process can open, a
// process-local set.
import type pg from 'pg';
import type { Db } from './db.ts';
import { silentLogger, type Logger } from '../contract/index.ts';

/** Advisory-lock namespace (first key) of worker identities; the second key is hashtext(client id). */
const IDENTITY_LOCK_SPACE = 7340102;

export class WorkerIdentityTakenError extends Error {
  readonly retryable = false;
  constructor(readonly clientId: string) {
    super(
      `another ingest worker already runs as "${clientId}" (同一客户端标识的接入进程已在运行); ` +
        'give each worker of a region its own replica name (ingest config `replica`, XIAOAN_REPLICA) or its own broker.clientId',
    );
    this.name = 'WorkerIdentityTakenError';
  }
}

export interface IdentityClaim {
  release(): Promise<void>;
}

/** PGlite: ids claimed in this process, per database (a PGlite database lives in one process). */
const claimedHere = new WeakMap<Db, Set<string>>();

/** Claim `clientId` for this worker; throws WorkerIdentityTakenError when another worker holds it. */
export async function claimWorkerIdentity(db: Db, clientId: string, log: Logger = silentLogger): Promise<IdentityClaim> {
  if (!db.pool) return claimInProcess(db, clientId);
  const pool = db.pool;
  let released = false;
  let client: pg.PoolClient | null = await lockOn(pool, clientId);
  let retry: ReturnType<typeof setTimeout> | null = null;
  // A database restart ends the session and the lock with it: claim it again once the server is back.
  const watch = (c: pg.PoolClient) =>
    c.on('error', (e) => {
      if (released || client !== c) return;
      client = null;
      c.release(true);
      log.warn('connection holding the worker identity lock was lost; claiming it again (标识锁连接断开)', { clientId, error: e.message });
      reclaim(1_000);
    });
  const reclaim = (ms: number) => {
    retry = setTimeout(() => {
      retry = null;
      if (released) return;
      lockOn(pool, clientId).then(
        (c) => {
          if (released) return void c.release(true);
          client = c;
          watch(c);
          log.info('worker identity lock held again', { clientId });
        },
        (e) => {
          if (e instanceof WorkerIdentityTakenError) log.error('another worker took this client id while the database was away (客户端标识被占用)', { clientId });
          reclaim(Math.min(30_000, ms * 2));
        },
      );
    }, ms);
    retry.unref?.();
  };
  watch(client);
  return {
    async release() {
      if (released) return;
      released = true;
      if (retry) clearTimeout(retry);
      const c = client;
      client = null;
      if (!c) return;
      await c.query('select pg_advisory_unlock($1, hashtext($2))', [IDENTITY_LOCK_SPACE, clientId]).catch(() => {});
      // the connection goes away with its session: nothing of the lock can linger in the pool
      c.release(true);
    },
  };
}

/** A connection of its own holding the lock, or WorkerIdentityTakenError. */
async function lockOn(pool: pg.Pool, clientId: string): Promise<pg.PoolClient> {
  const client = await pool.connect();
  const swallow = () => {};
  client.on('error', swallow);
  try {
    const r = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1, hashtext($2)) as ok', [IDENTITY_LOCK_SPACE, clientId]);
    if (!r.rows[0]?.ok) throw new WorkerIdentityTakenError(clientId);
    return client;
  } catch (e) {
    client.release(true);
    throw e;
  } finally {
    client.off('error', swallow);
  }
}

function claimInProcess(db: Db, clientId: string): IdentityClaim {
  let ids = claimedHere.get(db);
  if (!ids) claimedHere.set(db, (ids = new Set()));
  if (ids.has(clientId)) throw new WorkerIdentityTakenError(clientId);
  ids.add(clientId);
  const held = ids;
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      held.delete(clientId);
    },
  };
}
