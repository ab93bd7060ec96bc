// Opening the store when PostgreSQL is not up yet: a worker started before its database (a host
// booting, compose starting services together, a database restarting) waits and retries with
// backoff, saying what it waits for, instead of exiting. What waiting cannot fix (a wrong password,
// a database that does not exist, a bad URL) still fails at once.
import { silentLogger, systemClock, type Clock, type Logger } from '../contract/index.ts';
import { redactUrl } from './db.ts';
import { classifyDbError } from './postgres/writer.ts';
import { openStore, type OpenStoreOptions, type Store } from './store.ts';

export interface WaitOptions extends OpenStoreOptions {
  /** first and longest pause between attempts (default 500 ms … 15 s) */
  retry?: { minMs?: number; maxMs?: number };
  /** aborting stops the wait (SIGTERM while waiting) */
  signal?: AbortSignal;
  /** attempts before giving up (default: no limit) */
  maxAttempts?: number;
}

/** Whether a failure to open the store may pass by itself: a server not (yet) reachable or starting / shutting down. */
export function storeMayComeUp(e: unknown): boolean {
  const cause = (e as { cause?: unknown })?.cause ?? e;
  const err = classifyDbError(cause);
  if (typeof err.code === 'string' && /^(ERR_INVALID_URL|ENOENT|EACCES)$/.test(err.code)) return false;
  // PGlite and URL errors carry no code but are not connection faults
  if (!(cause as { code?: unknown })?.code && !(cause as { severity?: unknown })?.severity) return false;
  return err.retryable === true;
}

export async function openStoreWhenReady(url: string, opts: WaitOptions = {}): Promise<Store> {
  const log = (opts.log ?? silentLogger).child('store');
  const clock: Clock = opts.clock ?? systemClock;
  const min = opts.retry?.minMs ?? 500;
  const max = opts.retry?.maxMs ?? 15_000;
  let delay = min;
  for (let attempt = 1; ; attempt++) {
    try {
      const store = await openStore(url, opts);
      if (attempt > 1) log.info('database reachable; starting (数据库已就绪)', { url: redactUrl(url), attempts: attempt });
      return store;
    } catch (e) {
      if (!storeMayComeUp(e) || (opts.maxAttempts && attempt >= opts.maxAttempts)) throw e;
      if (opts.signal?.aborted) throw new Error('stopped while waiting for the database');
      const cause = ((e as { cause?: Error }).cause ?? e) as Error & { code?: string };
      log.warn('waiting for PostgreSQL (等待数据库启动)', { url: redactUrl(url), error: cause.message, code: cause.code ?? null, retryInMs: delay, attempt });
      await pause(clock, delay, opts.signal);
      delay = Math.min(max, delay * 2);
    }
  }
}

function pause(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clock.clearTimeout(t);
      resolve();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
