// Receipts as the worker builds them (docs/delivery.md): ranges name every seq once, and a commit
// whose seqs scatter into more than MAX_BATCH ranges gets several receipts, each valid on the wire.
import { describe, expect, it } from 'vitest';
import { MAX_BATCH, receiptSchema } from '../contract/index.ts';
import { buildReceipts, defaultClientId, RegistrationReminder } from './worker.ts';

describe('buildReceipts', () => {
  it('names duplicates and scattered seqs as the fewest ranges', () => {
    expect(buildReceipts('gw-1', [5, 3, 4, 4, 9, 1], 1_764_650_000_000)).toEqual([{ v: 1, gateway: 'gw-1', ts: 1_764_650_000_000, seqs: [[1, 1], [3, 5], [9, 9]] }]);
    expect(buildReceipts('gw-1', [], 1_764_650_000_000)).toEqual([]);
  });

  it('splits past MAX_BATCH ranges, every receipt valid and every seq named once', () => {
    const seqs = Array.from({ length: MAX_BATCH * 2 + 7 }, (_, i) => i * 2); // no two adjacent: one range each
    const receipts = buildReceipts('gw-1', seqs, 1_764_650_000_000);
    expect(receipts.map((r) => r.seqs.length)).toEqual([MAX_BATCH, MAX_BATCH, 7]);
    for (const r of receipts) expect(receiptSchema.safeParse(r).success).toBe(true);
    expect(receipts.flatMap((r) => r.seqs.map(([a]) => a))).toEqual(seqs);
  });
});

describe('stable worker identities', () => {
  it('default client id prefix: xiaoan-ingest-{region}-{replica}', () => {
    expect(defaultClientId('3701')).toBe('xiaoan-ingest-3701-main');
    expect(defaultClientId('37', 'ingest-2')).toBe('xiaoan-ingest-37-ingest-2');
  });
});

describe('RegistrationReminder', () => {
  it('speaks at most once a minute per gateway', () => {
    let now = 0;
    const said: string[] = [];
    const r = new RegistrationReminder({ now: () => now } as never, 60_000, (id) => said.push(id));
    r.note('gw-a', '370102');
    r.note('gw-a', '370102');
    r.note('gw-b', '370102');
    now = 59_999;
    r.note('gw-a', '370102');
    now = 60_000;
    r.note('gw-a', '370102');
    expect(said).toEqual(['gw-a', 'gw-b', 'gw-a']);
  });
});
