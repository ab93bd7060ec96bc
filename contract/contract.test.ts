import { describe, expect, it } from 'vitest';
import {
  buildTopic, parseTopic, regionFilter, parseOrgPath, inScope, ancestorsOf, parsePayload,
  readingBatchSchema, eventBatchSchema, residentIdProblem, maskResidentId, hashResidentId, TopicError, OrgCodeError,
} from './index.ts';

describe('topics', () => {
  it('builds and parses a readings topic', () => {
    const t = buildTopic({ county: '370102', gatewayId: 'gw-001', channel: 'readings' });
    expect(t).toBe('xiaoan/v1/37/3701/370102/gw-001/readings');
    expect(parseTopic(t)).toEqual({ province: '37', city: '3701', county: '370102', gatewayId: 'gw-001', channel: 'readings' });
  });
  it('keeps the command kind below cmd/', () => {
    expect(parseTopic('xiaoan/v1/37/3701/370102/gw-1/cmd/device.write').sub).toBe('device.write');
  });
  it('says which part of a topic is wrong', () => {
    const cases: Array<[string, string]> = [
      ['other/v1/37/3701/370102/gw/readings', 'root'],
      ['xiaoan/v2/37/3701/370102/gw/readings', 'version'],
      ['xiaoan/v1/37/3801/380102/gw/readings', 'city'],
      ['xiaoan/v1/37/3701/370200/gw/readings', 'county'],
      ['xiaoan/v1/37/3701/370102/g+w/readings', 'gatewayId'],
      ['xiaoan/v1/37/3701/370102/gw/telemetry', 'channel'],
      ['xiaoan/v1/37/3701/370102/gw', 'length'],
    ];
    for (const [topic, part] of cases) {
      try { parseTopic(topic); expect.unreachable(topic); } catch (e) {
        expect(e).toBeInstanceOf(TopicError);
        expect((e as TopicError).part, topic).toBe(part);
      }
    }
  });
  it('makes region subscription filters', () => {
    expect(regionFilter('37')).toBe('xiaoan/v1/37/#');
    expect(regionFilter('3701', 'readings')).toBe('xiaoan/v1/37/3701/+/+/readings');
    expect(regionFilter('370102', 'events')).toBe('xiaoan/v1/37/3701/370102/+/events');
  });
});

describe('org paths', () => {
  it('parses every level', () => {
    expect(parseOrgPath('37').level).toBe('province');
    expect(parseOrgPath('37/3701').level).toBe('city');
    expect(parseOrgPath('37/3701/370102').level).toBe('county');
    expect(parseOrgPath('37/3701/370102/3737000001').level).toBe('school');
    expect(parseOrgPath('37/4137010422').level).toBe('university');
    expect(parseOrgPath('37/4137010422/4137010422-03').level).toBe('college');
  });
  it('rejects bad codes naming the part', () => {
    const bad: Array<[string, string]> = [
      ['3', 'path'], ['99', 'province'], ['37/3801', 'city'], ['37/3700', 'city'], ['37/3701/370100', 'county'],
      ['37/3701/370102/12345', 'school'], ['37/4137010422/x-01', 'college'], ['37//3701', 'path'],
    ];
    for (const [p, part] of bad) {
      try { parseOrgPath(p); expect.unreachable(p); } catch (e) {
        expect(e).toBeInstanceOf(OrgCodeError);
        expect((e as OrgCodeError).part, p).toBe(part);
      }
    }
  });
  it('scopes by subtree, not by string prefix', () => {
    expect(inScope('37/3701', '37/3701/370102/3737000001')).toBe(true);
    expect(inScope('37/3701', '37/3701')).toBe(true);
    expect(inScope('37/370', '37/3701')).toBe(false);
    expect(inScope('37/3702', '37/3701/370102')).toBe(false);
    expect(ancestorsOf('37/3701/370102')).toEqual(['37', '37/3701', '37/3701/370102']);
  });
});

describe('payloads', () => {
  const ok = { v: 1, gateway: 'gw-1', sentAt: 1_700_000_000_000, readings: [{ seq: 1, device: 'smoke-1', metric: 'smoke_density', ts: 1_700_000_000_000, value: 0.02 }] };
  it('accepts a reading batch and defaults quality', () => {
    const r = parsePayload(readingBatchSchema, JSON.stringify(ok));
    expect(r.ok && r.value.readings[0]!.quality).toBe('good');
  });
  it('explains what is wrong and where', () => {
    expect(parsePayload(readingBatchSchema, '{nope')).toMatchObject({ ok: false, error: expect.stringContaining('not JSON') });
    const bad = { ...ok, readings: [{ ...ok.readings[0], ts: 5 }] };
    const r = parsePayload(readingBatchSchema, JSON.stringify(bad));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toMatch(/^readings\[0\]\.ts:/);
    expect(parsePayload(readingBatchSchema, JSON.stringify({ ...ok, v: 2 }))).toMatchObject({ ok: false, error: expect.stringContaining('wire version 2') });
    expect(parsePayload(eventBatchSchema, JSON.stringify({ v: 1, gateway: 'gw', sentAt: 1_700_000_000_000, events: [{ seq: 1, device: 'd', type: 'Smoke', ts: 1_700_000_000_000 }] })).ok).toBe(false);
  });
});

describe('resident IDs', () => {
  // 11010519491231002X is the standard's own worked example.
  it('validates the GB 11643 check character', () => {
    expect(residentIdProblem('11010519491231002X')).toBeNull();
    expect(residentIdProblem('110105194912310021')).toMatch(/check character/);
    expect(residentIdProblem('1101051949')).toMatch(/17 digits/);
  });
  it('masks and hashes, never echoing the clear number', () => {
    expect(maskResidentId('11010519491231002X')).toBe('110105********002X');
    const h = hashResidentId('11010519491231002x', 'k');
    expect(h).toBe(hashResidentId('11010519491231002X', 'k'));
    expect(h).not.toContain('1101051949');
  });
});

describe('log redaction', async () => {
  const { createLogger } = await import('./runtime.ts');
  it('never writes passwords or resident ID numbers', () => {
    const lines: string[] = [];
    const log = createLogger({ write: (l) => lines.push(l) }).child('kiosk');
    log.info('visitor 11010519491231002X checked in via mqtt://kiosk:s3cret@127.0.0.1:1', { password: 'hunter2', nested: { token: 'abc', note: 'id 11010519491231002X' } });
    const out = lines.join('\n');
    expect(out).not.toContain('hunter2');
    expect(out).not.toContain('s3cret');
    expect(out).not.toContain('abc"');
    expect(out).not.toContain('11010519491231002X');
    expect(out).toContain('110105********002X');
    expect(JSON.parse(lines[0]!).unit).toBe('kiosk');
  });
});

describe('secrets', async () => {
  const { hashSecret, verifySecret, hashSecretSync, verifySecretSync, verifyNothing } = await import('./secrets.ts');
  it('hashes once, verifies in both the async and the sync form, never keeps the clear secret', async () => {
    const h = await hashSecret('gate-secret-1');
    expect(h).toMatch(/^scrypt\$16384\$8\$1\$/);
    expect(h).not.toContain('gate-secret-1');
    expect(await verifySecret('gate-secret-1', h)).toBe(true);
    expect(await verifySecret('gate-secret-2', h)).toBe(false);
    expect(verifySecretSync('gate-secret-1', h)).toBe(true);
    expect(await verifySecret('x', hashSecretSync('x'))).toBe(true);
    expect(await verifyNothing('anything')).toBe(false);
  });
  it('refuses malformed or hostile stored hashes instead of burning memory on them', async () => {
    expect(await verifySecret('x', 'garbage')).toBe(false);
    expect(await verifySecret('x', 'scrypt$1048576$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA')).toBe(false);
  });
});
