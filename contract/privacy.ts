// Personal information rules that every tier applies the same way (PIPL; GB 11643 resident IDs).
import { createHmac } from 'node:crypto';

const WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK = '10X98765432';

/** GB 11643 resident ID: 17 digits and an ISO 7064 MOD 11-2 check character. */
export function residentIdProblem(id: string): string | null {
  if (!/^\d{17}[\dX]$/.test(id)) return 'resident ID must be 17 digits and a digit or X';
  let sum = 0;
  for (let i = 0; i < 17; i++) sum += Number(id[i]) * WEIGHTS[i]!;
  if (CHECK[sum % 11] !== id[17]) return 'resident ID check character does not match (GB 11643, ISO 7064 MOD 11-2)';
  return null;
}

/** For display: the region and the last four, e.g. 370102********1234. */
export function maskResidentId(id: string): string {
  if (id.length < 10) return '*'.repeat(id.length);
  return id.slice(0, 6) + '*'.repeat(id.length - 10) + id.slice(-4);
}

/** For watch-list matching: a keyed hash, so the clear number is never stored. */
export function hashResidentId(id: string, key: string): string {
  return createHmac('sha256', key).update(id.toUpperCase()).digest('hex');
}
