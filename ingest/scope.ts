// Org-tree scope, enforced in one place: every query a dashboard or API can reach takes a Scope
// and filters through scopeSql(). A Scope is made only from an authenticated principal
// (dashboards/auth) or by a tier that acts for the whole platform (forPlatform()).

import { parseOrgPath } from '../contract/index.ts';

declare const brand: unique symbol;
export interface Scope {
  readonly orgPath: string;
  readonly [brand]: 'Scope';
}

/** Validates the org path; throws OrgCodeError naming the wrong part. */
export function scopeOf(orgPath: string): Scope {
  parseOrgPath(orgPath);
  return { orgPath } as Scope;
}

/**
 * SQL predicate "column lies in the scope's subtree"; appends its parameters to `params`.
 * Uses a range on the text column rather than LIKE, so a btree index on org_path serves it and
 * '_' or '%' in a path can never widen the match.
 */
export function scopeSql(scope: Scope, column: string, params: unknown[]): string {
  params.push(scope.orgPath);
  const a = params.length;
  params.push(scope.orgPath + '/');
  const b = params.length;
  params.push(scope.orgPath + '0'); // '0' is the character after '/' in every collation we use ("C")
  const c = params.length;
  return `(${column} = $${a} or (${column} collate "C" >= $${b} and ${column} collate "C" < $${c}))`;
}
