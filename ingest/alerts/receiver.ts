// Reference receiver: the provincial hazard and emergency modules' stand-in for tests and the
// demo. Verifies the HMAC signature, stores each delivery once (deduplicated by idempotency key,
// also across its own restarts when given a directory), and answers as the OpenAPI document says.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verifySignature } from './delivery.ts';
import type { DeliveryPayload } from './store.ts';

export interface ReceivedDelivery {
  module: 'hazard' | 'emergency';
  idempotencyKey: string;
  receivedAt: number;
  payload: DeliveryPayload;
}

export interface ReferenceReceiver {
  url: string;
  /** POST targets for createAlerting's delivery option */
  hazardUrl: string;
  emergencyUrl: string;
  port: number;
  received(): ReceivedDelivery[];
  /** how many POSTs were duplicates (same idempotency key) */
  duplicates(): number;
  /** refused requests (bad signature, bad body) */
  refused(): number;
  /** answer the next `n` POSTs with `status` (tests of retries) */
  failNext(n: number, status?: number): void;
  close(): Promise<void>;
}

const MAX_BODY = 1_000_000;

export async function startReferenceReceiver(opts: { port?: number; host?: string; secret: string; dir?: string; now?: () => number }): Promise<ReferenceReceiver> {
  const now = opts.now ?? Date.now;
  const stored: ReceivedDelivery[] = [];
  const keys = new Set<string>();
  let dupes = 0;
  let refusedCount = 0;
  let failing = { n: 0, status: 503 };
  const file = opts.dir ? join(opts.dir, 'received.jsonl') : null;
  if (opts.dir) {
    await mkdir(opts.dir, { recursive: true });
    const text = await readFile(file!, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        const d = JSON.parse(line) as ReceivedDelivery;
        if (!keys.has(d.idempotencyKey)) (keys.add(d.idempotencyKey), stored.push(d));
      } catch {
        // a torn last line after a crash: the sender retries it
      }
    }
  }
  // one write at a time so lines never interleave
  let writes: Promise<unknown> = Promise.resolve();

  const answer = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/(hazard|emergency)\/alerts$/.exec(url.pathname);
    if (req.method === 'GET' && url.pathname === '/healthz') return answer(res, 200, { ok: true, stored: stored.length });
    if (!m || req.method !== 'POST') return answer(res, 404, { error: 'not_found', message: 'POST /hazard/alerts or /emergency/alerts' });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_BODY) return answer(res, 413, { error: 'too_large' });
      chunks.push(c as Buffer);
    }
    if (failing.n > 0) {
      failing.n--;
      return answer(res, failing.status, { error: 'unavailable', message: 'failing on purpose (test)' });
    }
    const body = Buffer.concat(chunks).toString('utf8');
    const problem = verifySignature(opts.secret, req.headers[TIMESTAMP_HEADER] as string | undefined, body, req.headers[SIGNATURE_HEADER] as string | undefined, now());
    if (problem) {
      refusedCount++;
      return answer(res, 401, { error: 'bad_signature', message: problem });
    }
    const key = req.headers[IDEMPOTENCY_HEADER] as string | undefined;
    if (!key) {
      refusedCount++;
      return answer(res, 400, { error: 'missing_idempotency_key' });
    }
    let payload: DeliveryPayload;
    try {
      payload = JSON.parse(body) as DeliveryPayload;
    } catch {
      refusedCount++;
      return answer(res, 400, { error: 'not_json' });
    }
    if (payload?.v !== 1 || payload.idempotencyKey !== key || payload.module !== m[1] || !payload.alert?.id) {
      refusedCount++;
      return answer(res, 422, { error: 'invalid', message: 'v must be 1, idempotencyKey must equal the header, module must match the path' });
    }
    if (keys.has(key)) {
      dupes++;
      return answer(res, 200, { accepted: true, duplicate: true, idempotencyKey: key });
    }
    keys.add(key);
    const rec: ReceivedDelivery = { module: m[1] as 'hazard' | 'emergency', idempotencyKey: key, receivedAt: now(), payload };
    if (file) {
      const line = JSON.stringify(rec) + '\n';
      writes = writes.then(() => appendFile(file, line));
      try {
        await writes;
      } catch (e) {
        keys.delete(key);
        return answer(res, 503, { error: 'storage', message: (e as Error).message });
      }
    }
    stored.push(rec);
    return answer(res, 201, { accepted: true, duplicate: false, idempotencyKey: key });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) answer(res, 500, { error: 'internal', message: (e as Error).message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${opts.host ?? '127.0.0.1'}:${port}`;
  return {
    url,
    port,
    hazardUrl: `${url}/hazard/alerts`,
    emergencyUrl: `${url}/emergency/alerts`,
    received: () => [...stored],
    duplicates: () => dupes,
    refused: () => refusedCount,
    failNext(n, status = 503) {
      failing = { n, status };
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
