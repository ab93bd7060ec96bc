// Live push of alert changes to browsers over Server-Sent Events.
//
// One LISTEN on `xiaoan_alert_changes` for the whole server (the alerting module notifies in the
// same transaction as each change, payload {id, orgPath, state, category, severity, drill}).
// Each connected client has the scope of its session; a change is forwarded only to clients whose
// subtree holds the alert's org path, and the full alert is read back through that client's own
// scope, so the stream can never show more than GET /api/alerts would.

import type { ServerResponse } from 'node:http';
import { inScope, type Clock, type Logger } from '../contract/index.ts';
import type { Db } from '../ingest/db.ts';
import type { Scope } from '../ingest/scope.ts';

export const ALERT_CHANNEL = 'xiaoan_alert_changes';

export interface AlertChange {
  id: string;
  orgPath: string;
  state: string;
  category: string;
  severity: string;
  drill: boolean;
}

interface Client {
  res: ServerResponse;
  scope: Scope;
  username: string;
  token: string;
}

export interface LiveHub {
  attach(res: ServerResponse, scope: Scope, username: string, token: string): void;
  clients(): number;
  /** streams open now for this session and for this user */
  count(token: string, username: string): { session: number; user: number };
  close(): Promise<void>;
}

export async function createLiveHub(opts: {
  db: Db;
  clock: Clock;
  log: Logger;
  /** reads the full alert through the client's scope; null when not visible */
  fetchAlert(scope: Scope, id: string): Promise<unknown | null>;
  heartbeatMs?: number;
  /** whether a session is still valid; a stream whose session ended (logout, expiry) is closed */
  sessionValid?(token: string): Promise<boolean>;
}): Promise<LiveHub> {
  const { clock, log } = opts;
  const clients = new Set<Client>();
  let nextEventId = 1;

  const write = (c: Client, text: string) => {
    try {
      c.res.write(text);
    } catch (e) {
      log.warn('live: write failed; dropping client', { user: c.username, error: (e as Error).message });
      clients.delete(c);
    }
  };

  const onChange = async (payload: string) => {
    let change: AlertChange;
    try {
      change = JSON.parse(payload) as AlertChange;
      if (typeof change?.id !== 'string' && typeof change?.id !== 'number') throw new Error('no id');
      if (typeof change.orgPath !== 'string') throw new Error('no orgPath');
      change.id = String(change.id);
    } catch (e) {
      log.warn('live: ignoring malformed alert notification', { error: (e as Error).message, payload: payload.slice(0, 200) });
      return;
    }
    // One read per distinct scope, not per client.
    const byScope = new Map<string, Promise<unknown | null>>();
    for (const c of clients) {
      if (!inScope(c.scope.orgPath, change.orgPath)) continue;
      let p = byScope.get(c.scope.orgPath);
      if (!p) {
        p = opts.fetchAlert(c.scope, change.id).catch((e) => {
          log.error('live: reading alert for push failed', { id: change.id, error: (e as Error).message });
          return null;
        });
        byScope.set(c.scope.orgPath, p);
      }
      const alert = await p;
      if (!alert) continue;
      write(c, `id: ${nextEventId++}\nevent: alert\ndata: ${JSON.stringify({ change, alert })}\n\n`);
    }
  };

  const unlisten = await opts.db.listen(ALERT_CHANNEL, (payload) => {
    onChange(payload).catch((e) => log.error('live: push failed', { error: (e as Error).message }));
  });

  const heartbeat = clock.setInterval(() => {
    for (const c of clients) {
      write(c, `: heartbeat ${clock.now()}\n\n`);
      opts.sessionValid?.(c.token).then(
        (ok) => {
          if (ok || !clients.has(c)) return;
          clients.delete(c);
          write(c, `event: logout\ndata: {}\n\n`);
          c.res.end();
        },
        () => {},
      );
    }
  }, opts.heartbeatMs ?? 15_000);

  return {
    attach(res, scope, username, token) {
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      res.write(`retry: 3000\nevent: hello\ndata: ${JSON.stringify({ scope: scope.orgPath, at: clock.now() })}\n\n`);
      const c: Client = { res, scope, username, token };
      clients.add(c);
      res.on('close', () => clients.delete(c));
    },
    clients: () => clients.size,
    count(token, username) {
      let session = 0;
      let user = 0;
      for (const c of clients) {
        if (c.token === token) session++;
        if (c.username === username) user++;
      }
      return { session, user };
    },
    async close() {
      clock.clearInterval(heartbeat);
      for (const c of clients) c.res.end();
      clients.clear();
      await unlisten().catch(() => {});
    },
  };
}
