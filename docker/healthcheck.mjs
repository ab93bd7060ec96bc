// HEALTHCHECK of the xiaoan image: GET the running tier's health endpoint, exit 0 when it answers 2xx.
// The URL is XIAOAN_HEALTH_URL when set; otherwise it follows the tier the container runs
// (found in the process table) and XIAOAN_HTTP__PORT, the same variable the tier listens on.
import { readdirSync, readFileSync } from 'node:fs';

const DEFAULTS = {
  edge: { port: 8081, path: '/healthz' },
  ingest: { port: 8082, path: '/healthz' },
  serve: { port: 8080, path: '/api/healthz' },
  demo: { port: 8080, path: '/api/healthz' },
};

function runningTier() {
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const i = argv.findIndex((a) => a.endsWith('bin/xiaoan.js'));
      if (i >= 0 && DEFAULTS[argv[i + 1]]) return argv[i + 1];
    } catch {
      // the process ended while we looked
    }
  }
  return 'serve';
}

const tier = runningTier();
const url =
  process.env.XIAOAN_HEALTH_URL ||
  `http://127.0.0.1:${process.env.XIAOAN_HTTP__PORT || DEFAULTS[tier].port}${DEFAULTS[tier].path}`;

try {
  const res = await fetch(url, { signal: AbortSignal.timeout(4000) });
  if (!res.ok) {
    console.error(`unhealthy: ${url} answered ${res.status}`);
    process.exit(1);
  }
  process.exit(0);
} catch (e) {
  console.error(`unhealthy: ${url} unreachable (${e?.cause?.code ?? e?.message ?? e})`);
  process.exit(1);
}
