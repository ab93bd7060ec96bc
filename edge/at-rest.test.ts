import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadSecretKey, parseSecretKey, seal, SecretKeyError, unseal } from './at-rest.ts';
import { openRegistry } from './registry.ts';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'xiaoan-at-rest-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const CAMERA = 'onvif://admin:Cam-Pass-9931@10.0.3.8:8000';

describe('edge secrets at rest', () => {
  it('seals a device URL in the registry file and opens it for the gateway', () => {
    const dir = tmp();
    const r = openRegistry(join(dir, 'registry.sqlite'));
    r.upsert({ id: 'cam-1', profile: 'onvif-camera-generic', url: CAMERA }, 'test');
    expect(r.get('cam-1')?.url).toBe(CAMERA);
    r.close();
    expect(readFileSync(join(dir, 'registry.sqlite')).includes(Buffer.from('Cam-Pass-9931'))).toBe(false);
    expect(statSync(join(dir, 'secret.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'registry.sqlite')).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    // the same key (the generated secret.key) opens it again
    const again = openRegistry(join(dir, 'registry.sqlite'));
    expect(again.get('cam-1')?.url).toBe(CAMERA);
    again.close();
  });

  it('seals the clear rows of an older registry when it is opened', () => {
    const dir = tmp();
    const file = join(dir, 'registry.sqlite');
    openRegistry(file).close(); // the schema
    const raw = new Database(file);
    raw.prepare("INSERT INTO devices(id, profile, url, source, enrolled_at, updated_at) VALUES ('cam-1', 'onvif-camera-generic', ?, 'old', 1, 1)").run(CAMERA);
    raw.close();
    expect(readFileSync(file).includes(Buffer.from('Cam-Pass-9931')) || readFileSync(file + '-wal').includes(Buffer.from('Cam-Pass-9931'))).toBe(true);
    const r = openRegistry(file);
    expect(r.get('cam-1')?.url).toBe(CAMERA);
    r.close();
    for (const f of [file, file + '-wal']) {
      try {
        expect(readFileSync(f).includes(Buffer.from('Cam-Pass-9931')), f).toBe(false);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
  });

  it('takes a configured key (XIAOAN_EDGE_SECRET_KEY[_FILE]) and refuses a wrong one with a message saying what to do', () => {
    const dir = tmp();
    const key = Buffer.alloc(32, 7).toString('base64');
    const r = openRegistry(join(dir, 'registry.sqlite'), Date.now, { secretKey: key });
    r.upsert({ id: 'cam-1', profile: 'onvif-camera-generic', url: CAMERA }, 'test');
    r.close();
    expect(() => openRegistry(join(dir, 'registry.sqlite'), Date.now, { secretKey: Buffer.alloc(32, 8).toString('hex') }).list()).toThrow(SecretKeyError);
    expect(() => parseSecretKey('too-short', 'XIAOAN_EDGE_SECRET_KEY')).toThrow(/32 字节 give 32 bytes/);
    expect(() => unseal(parseSecretKey(key, 'k'), seal(loadSecretKey(tmp()), 'x'))).toThrow(SecretKeyError);
  });
});
