// Benchmark of the dashboards' HTTP server (Fastify): the alerts list (requests per second, p50
// and p99 latency at a fixed concurrency) and the live stream fan-out (one alert change pushed to
// N SSE clients: time until the last one has it). PGlite in memory; one process.
//
//   npm run bench:http [-- --quick] [--clients 1000] [--requests 2000] [--concurrency 20]
//
// The old hand-made node:http router is gone from this tree; to compare, run this same file in an
// export of the commit before the move (git archive 384ce3b), whose startStack ignores `server`.
// Full runs alone on the 2-core machine, two each, new vs old: alerts list 249–260 vs 270–282
// req/s; the last of 1,000 SSE clients 131–155 vs 144–218 ms. Last line is JSON.
import { performance } from 'node:perf_hooks';
import { startStack } from '../dashboards/testing.ts';

const args = process.argv.slice(2);
const flag = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const quick = args.includes('--quick');
const CLIENTS = flag('clients', quick ? 100 : 1000);
const REQUESTS = flag('requests', quick ? 300 : 2000);
const CONCURRENCY = flag('concurrency', 20);
const ALERTS = flag('alerts', quick ? 50 : 200);

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

async function main() {
  const stack = await startStack({ server: { liveLimits: { streamsPerSession: CLIENTS + 1, streamsPerUser: CLIENTS + 1 } } });
  try {
    for (let i = 0; i < ALERTS; i++) await stack.stage({ type: 'smoke.alarm', device: i % 2 ? 'smoke-1' : 'temp-1' }, (i % 2) as 0 | 1);
    const login = await fetch(stack.server.url + '/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'province', password: 'test-password-1' }) });
    const { token } = (await login.json()) as { token: string };
    const auth = { authorization: `Bearer ${token}` };

    // 1. the alerts list
    const latencies: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < REQUESTS) {
        const s = performance.now();
        const r = await fetch(stack.server.url + '/api/alerts?limit=100', { headers: auth });
        await r.arrayBuffer();
        if (r.status !== 200) throw new Error(`alerts list answered ${r.status}`);
        latencies.push(performance.now() - s);
      }
    }));
    const listSeconds = (performance.now() - t0) / 1000;

    // 2. fan-out of one change to every SSE client
    const ctrls: AbortController[] = [];
    const got: Promise<number>[] = [];
    for (let i = 0; i < CLIENTS; i++) {
      const ctrl = new AbortController();
      ctrls.push(ctrl);
      const r = await fetch(stack.server.url + '/api/stream', { headers: auth, signal: ctrl.signal });
      const reader = r.body!.getReader();
      got.push((async () => {
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return NaN;
          buf += dec.decode(value, { stream: true });
          if (buf.includes('event: alert')) return performance.now();
        }
      })());
    }
    const sent = performance.now();
    await stack.stage({ type: 'smoke.alarm', device: 'smoke-1' });
    const arrivals = await Promise.all(got);
    const fanoutMs = Math.max(...arrivals) - sent;
    for (const c of ctrls) c.abort();

    const result = {
      alerts_list_req_per_s: Math.round(REQUESTS / listSeconds),
      alerts_list_p50_ms: Number(pct(latencies, 0.5).toFixed(1)),
      alerts_list_p99_ms: Number(pct(latencies, 0.99).toFixed(1)),
      sse_clients: CLIENTS,
      sse_fanout_last_ms: Number(fanoutMs.toFixed(1)),
      sse_fanout_p50_ms: Number((pct(arrivals, 0.5) - sent).toFixed(1)),
    };
    console.log(JSON.stringify(result));
  } finally {
    await stack.close();
  }
}

await main();
