// Who may do what. One table, read by the one middleware that turns a session into a principal;
// endpoints declare the permission they need and never look at roles or org paths themselves.
import { inScope } from '../contract/index.ts';
import { scopeOf, type Scope } from '../ingest/scope.ts';
import type { Role, User } from './auth.ts';

export const PERMISSIONS = {
  /** any logged-in user: who am I, log out */
  session: ['desk', 'tech', 'author', 'admin'],
  /** see alerts of the subtree, their history, the live stream */
  'alerts.read': ['desk', 'tech', 'author', 'admin'],
  /** acknowledge and resolve alerts */
  'alerts.act': ['desk', 'admin'],
  'devices.read': ['desk', 'tech', 'author', 'admin'],
  /** enrol, test, remove, discover, import devices (commands to the gateway) */
  'devices.manage': ['tech'],
  /** register and remove gateways centrally (xiaoan gateway add / remove) */
  'gateways.manage': ['tech', 'admin'],
  'readings.read': ['desk', 'tech', 'author', 'admin'],
  /** live camera view and snapshots (sensitive: every view is audited) */
  'cameras.view': ['desk', 'tech'],
  'rules.read': ['author', 'admin', 'tech'],
  'rules.write': ['author'],
  'overview.read': ['admin', 'author'],
  'audit.read': ['admin'],
} as const satisfies Record<string, readonly Role[]>;
export type Permission = keyof typeof PERMISSIONS;

export function can(role: Role, permission: Permission): boolean {
  return (PERMISSIONS[permission] as readonly Role[]).includes(role);
}

export interface Principal {
  user: User;
  role: Role;
  /** the user's subtree: every query an endpoint makes goes through it */
  scope: Scope;
  csrfToken: string;
  via: 'cookie' | 'bearer';
  /** A narrower scope inside the user's own (a filter such as ?site=), or null when outside it. */
  narrow(orgPath: string): Scope | null;
}

export function principalOf(user: User, csrfToken: string, via: 'cookie' | 'bearer'): Principal {
  const scope = scopeOf(user.orgPath);
  return {
    user,
    role: user.role,
    scope,
    csrfToken,
    via,
    narrow(orgPath) {
      if (!inScope(user.orgPath, orgPath)) return null;
      try {
        return scopeOf(orgPath);
      } catch {
        return null;
      }
    },
  };
}
