// The optional second sink: InfluxDB 1.x (the `influx` client), for sites that already run
// InfluxDB and Grafana. It is a BatchListener whose onStored only copies points into its own
// bounded buffer and returns at once: a slow or absent InfluxDB never slows, blocks or fails the
// PostgreSQL path. A writer loop drains the buffer in batches and retries with backoff; when the
// buffer is full the oldest points are dropped and counted (InfluxDB is a copy; PostgreSQL is the
// system of record).
//
// Measurements: `readings` (tags gateway, device, metric, org; fields value, seq, quality) and
// `events` (tags gateway, device, type, priority, drill, org; fields seq, data as JSON), ms precision.

import { InfluxDB, type IPoint } from 'influx';
import { silentLogger, systemClock, type Clock, type Logger } from '../../contract/index.ts';
import type { BatchListener, StoredBatch } from '../types.ts';

export interface InfluxSinkOptions {
  /** http(s)://HOST:PORT/DATABASE */
  url: string;
  username?: string;
  password?: string;
  /** points held while InfluxDB is slow or down (default 100,000) */
  bufferMax?: number;
  /** points per write (default 5,000) */
  batchSize?: number;
  /** how long a partial batch waits before it is written (default 1,000 ms) */
  flushMs?: number;
  retry?: { minMs?: number; maxMs?: number };
  log?: Logger;
  clock?: Clock;
}

export type InfluxHealth = 'connecting' | 'ok' | 'retrying' | 'closed';

export interface InfluxSinkStats {
  state: InfluxHealth;
  buffered: number;
  written: number;
  /** dropped because the buffer was full */
  dropped: number;
  /** dropped because InfluxDB refused them as malformed (400) */
  rejected: number;
  retries: number;
  lastError: string | null;
}

export interface InfluxSink {
  listener: BatchListener;
  stats(): InfluxSinkStats;
  /** write what is buffered now (tests, shutdown); resolves when the buffer is empty or InfluxDB failed once */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export class InfluxWriteError extends Error {
  constructor(message: string, readonly status: number | undefined, readonly retryable: boolean) {
    super(message);
    this.name = 'InfluxWriteError';
  }
}

/** 400 (a malformed point, a field type conflict) will fail the same way again; anything else may pass later. */
export function classifyInfluxError(e: unknown): InfluxWriteError {
  const err = e as { message?: string; res?: { statusCode?: number } };
  const status = err?.res?.statusCode;
  return new InfluxWriteError(`InfluxDB write failed${status ? ` (HTTP ${status})` : ''}: ${err?.message ?? String(e)}`, status, status !== 400);
}

export function parseInfluxUrl(url: string): { protocol: 'http' | 'https'; host: string; port: number; database: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`InfluxDB url "${url}" is not a URL; use http://HOST:8086/DATABASE`);
  }
  const database = u.pathname.replace(/^\/+|\/+$/g, '');
  if (!/^https?:$/.test(u.protocol) || !database || database.includes('/')) {
    throw new Error(`InfluxDB url "${url}" must be http(s)://HOST:PORT/DATABASE (one database name in the path)`);
  }
  return { protocol: u.protocol === 'https:' ? 'https' : 'http', host: u.hostname, port: Number(u.port || 8086), database };
}

export async function createInfluxSink(opts: InfluxSinkOptions): Promise<InfluxSink> {
  const log = (opts.log ?? silentLogger).child('influx');
  const clock = opts.clock ?? systemClock;
  const target = parseInfluxUrl(opts.url);
  const bufferMax = opts.bufferMax ?? 100_000;
  const batchSize = opts.batchSize ?? 5_000;
  const flushMs = opts.flushMs ?? 1_000;
  const retryMin = opts.retry?.minMs ?? 500;
  const retryMax = opts.retry?.maxMs ?? 30_000;
  const influx = new InfluxDB({
    host: target.host,
    port: target.port,
    protocol: target.protocol,
    database: target.database,
    ...(opts.username ? { username: opts.username, password: opts.password ?? '' } : {}),
  });

  let buffer: IPoint[] = [];
  let head = 0; // points before `head` are already written (avoids shifting a big array)
  const s: InfluxSinkStats = { state: 'connecting', buffered: 0, written: 0, dropped: 0, rejected: 0, retries: 0, lastError: null };
  let databaseReady = false;
  let closed = false;
  let running = false;
  let timer: unknown = null;
  let delay = retryMin;
  let waiters: Array<() => void> = [];

  const size = () => buffer.length - head;

  function compact() {
    if (head > 0 && (head > 50_000 || head * 2 > buffer.length)) {
      buffer = buffer.slice(head);
      head = 0;
    }
  }

  function push(points: IPoint[]) {
    for (const p of points) buffer.push(p);
    const over = size() - bufferMax;
    if (over > 0) {
      head += over;
      s.dropped += over;
      compact();
      log.warn('InfluxDB buffer full; oldest points dropped (InfluxDB 缓冲已满，丢弃最旧数据)', { dropped: over, totalDropped: s.dropped });
    }
    if (size() >= batchSize) kick(0);
    else kick(flushMs);
  }

  function kick(ms: number) {
    if (closed || running) return;
    if (timer !== null) {
      if (ms > 0) return;
      clock.clearTimeout(timer);
    }
    timer = clock.setTimeout(() => {
      timer = null;
      void drain();
    }, ms);
  }

  async function drain(): Promise<void> {
    if (running || closed) return;
    running = true;
    try {
      while (size() > 0 && !closed) {
        const batch = buffer.slice(head, head + batchSize);
        try {
          if (!databaseReady) {
            await influx.createDatabase(target.database); // idempotent in InfluxDB 1.x
            databaseReady = true;
          }
          await influx.writePoints(batch, { precision: 'ms' });
          head += batch.length;
          compact();
          s.written += batch.length;
          if (s.state !== 'ok') log.info('InfluxDB writes flowing (InfluxDB 写入正常)', { buffered: size() });
          s.state = 'ok';
          s.lastError = null;
          delay = retryMin;
        } catch (e) {
          const err = classifyInfluxError(e);
          s.lastError = err.message;
          if (!err.retryable) {
            head += batch.length;
            compact();
            s.rejected += batch.length;
            log.error('InfluxDB refused a batch as malformed; dropped (InfluxDB 拒绝该批数据)', { points: batch.length, error: err.message });
            continue;
          }
          if (err.status === 404) databaseReady = false;
          s.retries++;
          if (s.state !== 'retrying') log.warn('InfluxDB unavailable; buffering and retrying (InfluxDB 不可用，缓冲重试中)', { error: err.message });
          s.state = 'retrying';
          const wait = delay;
          delay = Math.min(retryMax, delay * 2);
          running = false;
          const w = waiters;
          waiters = [];
          for (const f of w) f();
          kick(wait);
          return;
        }
      }
    } finally {
      if (running) {
        running = false;
        const w = waiters;
        waiters = [];
        for (const f of w) f();
      }
    }
  }

  function toPoints(b: StoredBatch): IPoint[] {
    const out: IPoint[] = [];
    for (const r of b.readings) {
      out.push({
        measurement: 'readings',
        tags: { gateway: b.gateway.id, device: r.device, metric: r.metric, org: b.gateway.orgPath },
        fields: { value: r.value, seq: r.seq, quality: r.quality },
        timestamp: new Date(r.ts),
      });
    }
    for (const e of b.events) {
      out.push({
        measurement: 'events',
        tags: { gateway: b.gateway.id, device: e.device, type: e.type, priority: e.priority, drill: String(e.drill), org: b.gateway.orgPath },
        fields: { seq: e.seq, data: JSON.stringify(e.data ?? {}) },
        timestamp: new Date(e.ts),
      });
    }
    return out;
  }

  const listener: BatchListener = {
    name: 'influx',
    async onStored(batch) {
      if (!closed) push(toPoints(batch));
    },
  };

  return {
    listener,
    stats: () => ({ ...s, buffered: size() }),
    async flush() {
      if (size() === 0) return;
      if (timer !== null) {
        clock.clearTimeout(timer);
        timer = null;
      }
      if (running) await new Promise<void>((r) => waiters.push(r));
      await drain();
    },
    async close() {
      closed = true;
      s.state = 'closed';
      if (timer !== null) clock.clearTimeout(timer);
      timer = null;
    },
  };
}
