// The worker's units alone: no broker, no database, a manual clock.
import { describe, expect, it } from 'vitest';
import { silentLogger, type Clock } from '../../contract/index.ts';
import type { InboundMessage } from '../mqtt-lane.ts';
import { GatewayCommands, CommandTimeoutError } from './commands.ts';
import { CustodyGate, type PendingMessage } from './custody.ts';
import { ReceiptPublisher } from './receipts.ts';
import { RollupTimer } from './rollup-timer.ts';
import { StorageRetry } from './storage-retry.ts';

function manualClock(start = 1_764_650_000_000) {
  let now = start;
  let id = 0;
  const timers = new Map<number, { at: number; fn: () => void; every?: number }>();
  const clock: Clock & { advance(ms: number): Promise<void> } = {
    now: () => now,
    setTimeout: (fn, ms) => (timers.set(++id, { at: now + ms, fn }), id),
    clearTimeout: (h) => void timers.delete(h as number),
    setInterval: (fn, ms) => (timers.set(++id, { at: now + ms, fn, every: ms }), id),
    clearInterval: (h) => void timers.delete(h as number),
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        const due = [...timers].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        now = due[1].at;
        if (due[1].every) due[1].at += due[1].every;
        else timers.delete(due[0]);
        due[1].fn();
        await flush();
      }
      now = end;
      await flush();
    },
  };
  return clock;
}
const flush = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};
const GW = { id: 'gw-1', orgPath: '37/3701/370102/3737000001', county: '370102', name: 'g' };

function pending(seqs: number[], evaluated: Promise<boolean>, settled: string[]): PendingMessage {
  const msg: InboundMessage = { topic: 't', payload: Buffer.from(''), settle: () => void settled.push(`m${seqs[0]}`) } as unknown as InboundMessage;
  return { gateway: GW, records: seqs.map((seq) => ({ seq })), sentAt: 0, msg, count: seqs.length, held: [], evaluated };
}

describe('CustodyGate: settle and receipt only once stored AND evaluated', () => {
  const setup = (stopping = false) => {
    const published: string[] = [];
    const receipts = new ReceiptPublisher(manualClock(), () => ({ publish: async (_t, p) => void published.push(p) }), silentLogger);
    return { published, gate: new CustodyGate(receipts, () => stopping, silentLogger) };
  };

  it('holds a stored message until its rule evaluation has committed', async () => {
    const { published, gate } = setup();
    let commit!: (ok: boolean) => void;
    const settled: string[] = [];
    gate.stored([pending([1, 2, 3], new Promise((r) => (commit = r)), settled)]);
    await flush();
    expect(settled).toEqual([]);
    expect(published).toEqual([]);
    commit(true);
    await gate.idle();
    expect(settled).toEqual(['m1']);
    expect(published.map((p) => JSON.parse(p).seqs)).toEqual([[[1, 3]]]);
  });

  it('a failed evaluation is still receipted while running (its records are stored), not while stopping', async () => {
    for (const stopping of [false, true]) {
      const { published, gate } = setup(stopping);
      const settled: string[] = [];
      gate.stored([pending([7], Promise.resolve(false), settled)]);
      await gate.idle();
      expect(settled.length).toBe(stopping ? 0 : 1);
      expect(published.length).toBe(stopping ? 0 : 1);
    }
  });
});

describe('StorageRetry', () => {
  it('retries a retryable fault with doubling backoff, says so once, and reports back', async () => {
    const clock = manualClock();
    const retry = new StorageRetry(clock, { minMs: 100, maxMs: 300 }, silentLogger, () => false);
    let calls = 0;
    const done = retry.run('readings', async () => {
      if (++calls < 4) throw Object.assign(new Error('connection refused'), { retryable: true });
      return 'ok';
    });
    await flush();
    expect(retry.state).toBe('retrying');
    await clock.advance(100); // 2nd call
    await clock.advance(200); // 3rd
    expect(calls).toBe(3);
    await clock.advance(300); // 4th: capped at maxMs
    expect(await done).toBe('ok');
    expect(retry.state).toBe('ok');
    expect(retry.retries).toBe(3);
  });

  it('throws a refusal of the data at once', async () => {
    const retry = new StorageRetry(manualClock(), { minMs: 100, maxMs: 300 }, silentLogger, () => false);
    await expect(retry.run('events', async () => { throw Object.assign(new Error('check violation'), { retryable: false }); })).rejects.toThrow('check violation');
    expect(retry.retries).toBe(0);
  });
});

describe('GatewayCommands', () => {
  const setup = () => {
    const clock = manualClock();
    const sent: string[] = [];
    const lane = { state: 'connected', publish: async (t: string) => void sent.push(t) };
    const cmds = new GatewayCommands(clock, async (id) => (id === GW.id ? GW : null), () => lane, silentLogger);
    return { clock, sent, cmds };
  };
  const cmd = (id: string) => ({ v: 1, id, kind: 'rebirth', issuedBy: 'test', issuedAt: 1_764_650_000_000 }) as never;

  it('resolves with the gateway\'s own answer, ignores another gateway\'s', async () => {
    const { sent, cmds } = setup();
    const r = cmds.send(GW.id, cmd('c1'));
    await flush();
    expect(sent).toEqual(['xiaoan/v1/37/3701/370102/gw-1/cmd/rebirth']);
    expect(cmds.answer('gw-other', { v: 1, id: 'c1', ok: true, ts: 2 } as never)).toBe(false);
    expect(cmds.answer(GW.id, { v: 1, id: 'c1', ok: true, ts: 2 } as never)).toBe(true);
    expect((await r).ok).toBe(true);
  });

  it('times out on the injected clock with a retryable error', async () => {
    const { clock, cmds } = setup();
    const r = cmds.send(GW.id, cmd('c2'), 5000);
    const seen = r.catch((e) => e);
    await flush(); // the gateway lookup, then the timer
    await clock.advance(4999);
    expect(await Promise.race([seen, Promise.resolve('waiting')])).toBe('waiting');
    await clock.advance(1);
    const e = await seen;
    expect(e).toBeInstanceOf(CommandTimeoutError);
    expect(e.retryable).toBe(true);
  });

  it('refuses a gateway not registered centrally', async () => {
    await expect(setup().cmds.send('gw-unknown', cmd('c3'))).rejects.toThrow(/not registered/);
  });
});

describe('RollupTimer', () => {
  it('refreshes on its interval, one run at a time, and keeps going after a failure', async () => {
    const clock = manualClock();
    let runs = 0;
    let release!: () => void;
    const t = new RollupTimer(clock, 1000, async () => {
      runs++;
      if (runs === 1) throw new Error('db gone');
      await new Promise<void>((r) => (release = r));
    }, silentLogger);
    t.start();
    await clock.advance(1000);
    await clock.advance(1000);
    expect(runs).toBe(2);
    await clock.advance(1000); // the second is still running: no overlap
    expect(runs).toBe(2);
    release();
    await flush();
    await clock.advance(1000);
    expect(runs).toBe(3);
    t.stop();
    await clock.advance(5000);
    expect(runs).toBe(3);
  });
});

describe('StoredDispatch', () => {
  it('passes stored batches to listeners without onArrival, also ones added after it was made (the CLI adds them late)', async () => {
    const { StoredDispatch } = await import('./stored-dispatch.ts');
    const listeners: import('../types.ts').BatchListener[] = [];
    const d = new StoredDispatch(listeners, {}, silentLogger);
    const got: string[] = [];
    listeners.push({ name: 'influx', onStored: async (b) => void got.push(`influx ${b.readings.length}`) });
    listeners.push({ name: 'alerting', onStored: async () => void got.push('alerting after commit'), onArrival: async () => {} });
    d.enqueue('readings', { gateway: GW, readings: [{ seq: 1 } as never], events: [] });
    await flush();
    expect(got).toEqual(['influx 1']);
  });
});
