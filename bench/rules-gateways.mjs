// The bench's gateways, in a worker thread so that publishing does not compete with the tiers
// under test for the same event loop. Plain JS (no TypeScript loader needed in the worker).
import { parentPort, workerData } from 'node:worker_threads';
import mqtt from 'mqtt';

const { brokerUrl, schools, rate, batch, metrics, probesPerS, seconds, warmupMs } = workerData;
const clients = await Promise.all(
  schools.map((s) => mqtt.connectAsync(brokerUrl, { clientId: `${s.id}-bench`, username: s.id, password: s.password, protocolVersion: 4, reconnectPeriod: 0 })),
);
const seqs = schools.map(() => 0);
const probeOpen = schools.map(() => false);
parentPort.postMessage({ kind: 'ready' });

let published = 0;
// readings the broker acknowledged (QoS 1): what the tiers under test really received
let acked = 0;
let next = 0;
let owed = 0;
let lastProbe = 0;
const start = Date.now();
const endAt = start + warmupMs + seconds * 1000;
let last = start;
await new Promise((resolve) => {
  const timer = setInterval(() => {
    const now = Date.now();
    if (now >= endAt) {
      clearInterval(timer);
      return resolve();
    }
    owed += ((now - last) / 1000) * rate;
    last = now;
    while (owed >= batch) {
      owed -= batch;
      const g = next++ % schools.length;
      const readings = new Array(batch);
      for (let i = 0; i < batch; i++) {
        const seq = ++seqs[g];
        readings[i] = { seq, device: `d${i % 10}`, metric: `m${(i * 7 + seq) % metrics}`, ts: now, value: Math.round(Math.random() * 400) / 1000, quality: 'good' };
      }
      if (now - lastProbe >= 1000 / probesPerS) {
        lastProbe = now;
        // alternately raise (2 > limit 1) and clear (0) this gateway's probe on its m0 rule
        const raise = !probeOpen[g];
        probeOpen[g] = raise;
        readings[batch - 1] = { seq: readings[batch - 1].seq, device: 'probe', metric: 'm0', ts: now, value: raise ? 2 : 0, quality: 'good' };
        if (raise) parentPort.postMessage({ kind: 'probe', rule: `b-s${g}-m0`, at: now, measured: now >= start + warmupMs });
      }
      clients[g].publish(schools[g].topic, JSON.stringify({ v: 1, gateway: schools[g].id, sentAt: now, readings }), { qos: 1 }, (err) => {
        if (!err) acked += batch;
      });
      published += batch;
    }
  }, 5);
});
// give the broker a few seconds to acknowledge what is in flight, then count only that
const graceEnd = Date.now() + 5000;
while (acked < published && Date.now() < graceEnd) await new Promise((r) => setTimeout(r, 50));
parentPort.postMessage({ kind: 'done', published: acked, offered: published, ms: Date.now() - start });
await Promise.all(clients.map((c) => c.endAsync(true)));
