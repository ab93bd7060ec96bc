// The one place audit_log rows are written (dashboards, CLI). Every row names an org path, because
// an auditor sees exactly the rows under their scope (GET /api/audit filters with scopeSql) and a
// row without one is seen by nobody. The path is, in order:
//   1. the org path of what was touched (a gateway, a device, an alert's site);
//   2. the actor's scope (the signed-in user's org path), when nothing narrower is known;
//   3. the org path of the user named in the row, when that user exists; for a failed login that is
//      the account someone tried, so its school's admins see attacks on their accounts;
//   4. the province root (the org tree's top node), seen only by province-wide auditors: failed
//      logins to unknown names, actions of the command line on no particular node.
import type { Queryable } from './db.ts';

export interface AuditEntry {
  action: string;
  target: string | null;
  /** org path of what was touched, if any */
  orgPath: string | null;
  /** the actor's scope, used when orgPath is null */
  actorOrgPath?: string | null;
  /** the actor; for a failed login the user name that was tried */
  username: string | null;
  role: string | null;
  /** remote address, or 'cli' */
  remote: string | null;
  detail?: Record<string, unknown>;
  /** epoch ms; the database's now() when absent */
  at?: number;
}

export async function writeAudit(db: Queryable, e: AuditEntry): Promise<void> {
  await db.query(
    `insert into audit_log (at, username, role, action, target, org_path, remote, detail)
     values (coalesce(to_timestamp($1::float8 / 1000.0), now()), $2, $3, $4, $5,
             coalesce($6::text, $7::text,
                      (select org_path from users where username = $2),
                      (select path from org_nodes where parent is null order by path limit 1)),
             $8, $9::jsonb)`,
    [e.at ?? null, e.username, e.role, e.action, e.target, e.orgPath, e.actorOrgPath ?? null, e.remote, JSON.stringify(e.detail ?? {})],
  );
}
