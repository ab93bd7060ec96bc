// Secrets at rest on a school gateway (docs/security.md, "Secrets at rest").
//
// Device URLs can carry credentials (`onvif://admin:PASSWORD@10.0.0.8`, an RTSP URL with a
// password): the registry keeps them sealed with AES-256-GCM under the gateway's secret key.
// The key comes from, in order: the edge setting `edgeSecretKey` (XIAOAN_EDGE_SECRET_KEY, or
// XIAOAN_EDGE_SECRET_KEY_FILE naming a credential file), else `{dataDir}/secret.key`, generated
// with mode 0600 on first start. MQTT device passwords are never sealed: only their scrypt hash
// is kept (contract/secrets.ts). The data dir is 0700 and its SQLite files 0600.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const SEALED = 'enc:v1:';
const IV_BYTES = 12; // NIST SP 800-38D: 96-bit IVs for GCM
const TAG_BYTES = 16;

export class SecretKeyError extends Error {
  constructor(where: string, what: string) {
    super(`网关密钥无效 edge secret key from ${where}: ${what}; 需要 32 字节 give 32 bytes as 64 hex digits or base64 (openssl rand -base64 32)`);
    this.name = 'SecretKeyError';
  }
}

/** 32 bytes from 64 hex digits or base64 text; throws SecretKeyError naming where it came from. */
export function parseSecretKey(text: string, where: string): Buffer {
  const t = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : /^[A-Za-z0-9+/_-]+={0,2}$/.test(t) ? Buffer.from(t, 'base64') : null;
  if (!key || key.length !== 32) throw new SecretKeyError(where, key ? `${key.length} bytes` : 'not hex or base64');
  return key;
}

/**
 * The gateway's secret key: the configured one (the value of XIAOAN_EDGE_SECRET_KEY, or the
 * contents of the file XIAOAN_EDGE_SECRET_KEY_FILE names, which the settings loader reads), else
 * `{dataDir}/secret.key`, created (0600, never overwritten) when missing.
 */
export function loadSecretKey(dataDir: string, configured?: string): Buffer {
  if (configured) return parseSecretKey(configured, 'edgeSecretKey (XIAOAN_EDGE_SECRET_KEY / _FILE)');
  const file = join(dataDir, 'secret.key');
  privateDir(dataDir);
  if (!existsSync(file)) {
    try {
      const fd = openSync(file, 'wx', 0o600); // wx: two processes starting at once keep the first key
      writeSync(fd, randomBytes(32).toString('base64') + '\n');
      closeSync(fd);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  chmodSync(file, 0o600); // a key copied in by hand with a looser mode is tightened
  return parseSecretKey(readFileSync(file, 'utf8'), file);
}

/** Seal a text (AES-256-GCM, random IV): `enc:v1:` + base64(iv ‖ tag ‖ ciphertext). */
export function seal(key: Buffer, plain: string): string {
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
  return SEALED + Buffer.concat([iv, c.getAuthTag(), body]).toString('base64');
}

export const isSealed = (v: string): boolean => v.startsWith(SEALED);

/** Open a sealed text; a text that is not sealed (a row from before sealing) comes back as it is. */
export function unseal(key: Buffer, value: string): string {
  if (!isSealed(value)) return value;
  const raw = Buffer.from(value.slice(SEALED.length), 'base64');
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
  d.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  try {
    return Buffer.concat([d.update(raw.subarray(IV_BYTES + TAG_BYTES)), d.final()]).toString('utf8');
  } catch {
    throw new SecretKeyError('the registry', 'a sealed device URL does not open with this key (was secret.key replaced or XIAOAN_EDGE_SECRET_KEY changed?)');
  }
}

/** The data dir, created if needed, readable by its owner only. */
export function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

/**
 * A SQLite file readable by its owner only, made before SQLite opens it: SQLite gives its -wal
 * and -shm files the main file's mode, so they are 0600 too.
 */
export function privateFile(file: string): void {
  closeSync(openSync(file, 'a', 0o600));
  chmodSync(file, 0o600);
  for (const side of ['-wal', '-shm']) if (existsSync(file + side)) chmodSync(file + side, 0o600);
}
