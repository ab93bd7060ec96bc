import { describe, expect, it } from 'vitest';
import { clientIdRefusal, defaultServicePrefix, longerOwners } from './mqtt-identity.ts';
import { PacketSizeGuard } from './mqtt-limits.ts';

describe('clientIdRefusal', () => {
  it('binds each kind of login to its own ids', () => {
    expect(clientIdRefusal({ kind: 'gateway', id: 'gw-1' }, 'gw-1')).toBeNull();
    expect(clientIdRefusal({ kind: 'gateway', id: 'gw-1' }, 'gw-1-node-red')).toBeNull();
    expect(clientIdRefusal({ kind: 'gateway', id: 'gw-1' }, 'gw-10')).toMatch(/gw-1/);
    expect(clientIdRefusal({ kind: 'gateway', id: 'gw-1' }, 'xiaoan-ingest-37-main-control')).toMatch(/gw-1/);
    expect(longerOwners('gw-1', 'gw-1-b-x')).toEqual(['gw-1-b', 'gw-1-b-x']);
    expect(longerOwners('gw-1', 'gw-1')).toEqual([]);
    expect(longerOwners('gw-1', 'xiaoan-ingest-37-main')).toEqual([]);
    expect(clientIdRefusal({ kind: 'gateway', id: 'gw-1' }, '')).toMatch(/empty/);
    const svc = { kind: 'service' as const, username: 'svc-ingest', prefixes: [defaultServicePrefix('svc-ingest')] };
    expect(defaultServicePrefix('svc-ingest')).toBe('xiaoan-ingest-');
    expect(clientIdRefusal(svc, 'xiaoan-ingest-3701-main-events')).toBeNull();
    expect(clientIdRefusal(svc, 'xiaoan-ingest-')).not.toBeNull();
    expect(clientIdRefusal(svc, 'xiaoan-serve-1')).not.toBeNull();
    const dev = { kind: 'device' as const, id: 'gate-1', otherDevices: ['gate-1', 'gate-1-b', 'gate-2'] };
    expect(clientIdRefusal(dev, 'gate-1')).toBeNull();
    expect(clientIdRefusal(dev, 'gate-1-sim')).toBeNull();
    expect(clientIdRefusal(dev, 'gate-1-b')).not.toBeNull();
    expect(clientIdRefusal(dev, 'gate-1-b-2')).not.toBeNull();
    expect(clientIdRefusal(dev, 'gate-2')).not.toBeNull();
    expect(clientIdRefusal(dev, 'gate-1+')).toMatch(/\+/);
  });
});

describe('PacketSizeGuard', () => {
  const header = (type: number, len: number) => {
    const out = [type];
    do {
      let b = len % 128;
      len = Math.floor(len / 128);
      if (len > 0) b |= 0x80;
      out.push(b);
    } while (len > 0);
    return Buffer.from(out);
  };

  it('refuses on the announced length, even when the header arrives a byte at a time', () => {
    const g = new PacketSizeGuard({ beforeAuthBytes: 1000, afterAuthBytes: 100_000 });
    const h = header(0x10, 16 * 1024 * 1024);
    const verdicts = [...h].map((b) => g.feed(Buffer.from([b])));
    expect(verdicts.slice(0, -1)).toEqual([null, null, null, null]);
    expect(verdicts.at(-1)).toMatch(/over the limit of 1000 before login/);
  });

  it('follows packet boundaries across chunks and applies the larger limit after login', () => {
    const g = new PacketSizeGuard({ beforeAuthBytes: 1000, afterAuthBytes: 100_000 });
    const connect = Buffer.concat([header(0x10, 500), Buffer.alloc(500)]);
    expect(g.feed(connect.subarray(0, 300))).toBeNull();
    expect(g.feed(connect.subarray(300))).toBeNull();
    g.accept();
    const publish = Buffer.concat([header(0x30, 50_000), Buffer.alloc(50_000)]);
    expect(g.feed(Buffer.concat([publish, header(0xc0, 0)]))).toBeNull(); // a PUBLISH, then a PINGREQ
    expect(g.feed(header(0x30, 200_000))).toMatch(/200004 bytes is over the limit of 100000$/);
  });

  it('caps all bytes before login, not only each packet', () => {
    const g = new PacketSizeGuard({ beforeAuthBytes: 1000, afterAuthBytes: 100_000 });
    const ping = header(0xc0, 0);
    let verdict: string | null = null;
    for (let i = 0; i < 3000 && !verdict; i++) verdict = g.feed(ping);
    expect(verdict).toMatch(/before the login was accepted/);
  });
});
