// Passwords and shared secrets of gateways, devices, service accounts and dashboard users: one
// format everywhere, `scrypt$N$r$p$salt$key` (base64url; N=16384, r=8, p=1, 16-byte salt,
// 32-byte key), compared in constant time. Only the hash is ever stored.
import { randomBytes, scrypt as scryptCb, scryptSync, timingSafeEqual } from 'node:crypto';

const N = 16384, R = 8, P = 1, KEYLEN = 32;
const MAXMEM = 64 * 1024 * 1024;

function scrypt(secret: string, salt: Buffer, n: number, r: number, p: number, keylen: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(secret, salt, keylen, { N: n, r, p, maxmem: MAXMEM }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

const encode = (salt: Buffer, key: Buffer) => ['scrypt', N, R, P, salt.toString('base64url'), key.toString('base64url')].join('$');

function decode(stored: string): { n: number; r: number; p: number; salt: Buffer; key: Buffer } | null {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [, n, r, p, salt, key] = parts as [string, string, string, string, string, string];
  const out = { n: Number(n), r: Number(r), p: Number(p), salt: Buffer.from(salt, 'base64url'), key: Buffer.from(key, 'base64url') };
  // refuse parameters that would let a stored row make us burn memory or time
  if (![out.n, out.r, out.p].every(Number.isInteger) || out.n > 1 << 17 || out.r > 16 || out.p > 4 || out.key.length < 16 || out.key.length > 64) return null;
  return out;
}

export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  return encode(salt, await scrypt(secret, salt, N, R, P, KEYLEN));
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const d = decode(stored);
  if (!d) return false;
  const got = await scrypt(secret, d.salt, d.n, d.r, d.p, d.key.length);
  return timingSafeEqual(got, d.key);
}

/** For callers that cannot wait (the gateway's device broker authenticates inside a sync lookup). */
export function hashSecretSync(secret: string): string {
  const salt = randomBytes(16);
  return encode(salt, scryptSync(secret, salt, KEYLEN, { N, r: R, p: P, maxmem: MAXMEM }));
}

export function verifySecretSync(secret: string, stored: string): boolean {
  const d = decode(stored);
  if (!d) return false;
  return timingSafeEqual(scryptSync(secret, d.salt, d.key.length, { N: d.n, r: d.r, p: d.p, maxmem: MAXMEM }), d.key);
}

let dummy: Promise<string> | undefined;
/** Spend the same time as a real check when there is no account to check against. */
export async function verifyNothing(secret: string): Promise<false> {
  dummy ??= hashSecret(randomBytes(16).toString('hex'));
  await verifySecret(secret, await dummy);
  return false;
}
