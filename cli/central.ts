// What the operator commands of the central store share (`gateway …`, `deadletters …`): which
// database they open, a plain table for people, and the audit trail of what they changed.
import { userInfo } from 'node:os';
import type { Store } from '../ingest/index.ts';
import { writeAudit } from '../ingest/audit.ts';

/** --database URL, else DATABASE_URL / XIAOAN_DATABASE__URL, else the demo's embedded database. */
export function centralDatabaseUrl(flags: Record<string, string | true>, env: NodeJS.ProcessEnv): string {
  if (typeof flags.database === 'string') return flags.database;
  return env.DATABASE_URL || env.XIAOAN_DATABASE__URL || `pglite:${env.XIAOAN_DATA ?? './data'}/pg`;
}

export async function withCentralStore<T>(flags: Record<string, string | true>, env: NodeJS.ProcessEnv, fn: (store: Store) => Promise<T>): Promise<T> {
  const { openStore } = await import('../ingest/index.ts');
  const store = await openStore(centralDatabaseUrl(flags, env));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Columns padded to their widest cell. */
export function table(cols: string[], rows: ReadonlyArray<object>): string[] {
  const cell = (r: object, c: string) => String((r as Record<string, unknown>)[c] ?? '').replace(/\s+/g, ' ');
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r, c).length)));
  return [cols.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd(), ...rows.map((r) => cols.map((c, i) => cell(r, c).padEnd(widths[i]!)).join('  ').trimEnd())];
}

/** One audit_log row for a change made from the command line (the same table the dashboards write). */
export async function auditCli(store: Store, action: string, target: string, orgPath: string | null, detail: Record<string, unknown> = {}): Promise<void> {
  let who = 'cli';
  try {
    who = `cli:${userInfo().username}`;
  } catch {
    /* no passwd entry (containers): plain cli */
  }
  // ingest/audit.ts: with no org path the row goes to the province root (a CLI operator has no scope of their own)
  await writeAudit(store.db, { username: who, role: 'operator', action, target, orgPath, remote: 'cli', detail });
}

/** `7d`, `12h`, `30m` back from now, or an ISO date; epoch ms. */
export function parseSince(v: string, now = Date.now()): number {
  const m = /^(\d+)\s*([mhd])$/.exec(v);
  if (m) return now - Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new Error(`--since "${v}" is neither a duration (30m, 12h, 7d) nor a date (2026-12-01, 2026-12-01T08:00:00+08:00)`);
  return t;
}
