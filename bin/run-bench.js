#!/usr/bin/env node
// `npm run bench`: every benchmark in its quick mode, one after another, so a full run fits in a
// few minutes. Each prints its own figures beside its peer or physical limit; run one alone
// (`npm run bench:ingest`) for the full-length figures.
import { spawnSync } from 'node:child_process';

const names = ['modbus', 'edge', 'ingest', 'rules', 'province'];
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
let failed = 0;
for (const name of only.length ? only : names) {
  process.stdout.write(`\n=== bench:${name} --quick ===\n`);
  const r = spawnSync('npm', ['run', '--silent', `bench:${name}`, '--', '--quick'], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    process.stdout.write(`bench:${name} exited with ${r.status}\n`);
  }
}
process.exitCode = failed ? 1 : 0;
