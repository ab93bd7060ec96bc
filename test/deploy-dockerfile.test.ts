// docker/Dockerfile, parsed (no Docker engine runs here): its stages, a non-root user and a
// health check in every image it ships, no secret in ENV/ARG, the lock file copied before
// `npm ci`, and the very npm commands and system packages CI runs (.ci/run), so CI proves them.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const DOCKERFILE = readFileSync(join(ROOT, 'docker/Dockerfile'), 'utf8');
const CI = readFileSync(join(ROOT, '.ci/run'), 'utf8');

interface Instruction { keyword: string; args: string; line: number }
interface Stage { name: string; from: string; line: number; instructions: Instruction[] }
interface Parsed { globalArgs: Map<string, string>; stages: Stage[] }

/** Dockerfile syntax: comments, line continuations, instructions; ARGs before the first FROM are global. */
function parseDockerfile(text: string): Parsed {
  const lines = text.split('\n');
  const instructions: Instruction[] = [];
  let buf = '';
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    if (trimmed.startsWith('#') || (trimmed === '' && buf === '')) continue; // comments, also inside continuations
    if (buf === '') start = i + 1;
    if (trimmed.endsWith('\\')) {
      buf += trimmed.slice(0, -1) + ' ';
      continue;
    }
    buf += trimmed;
    const m = /^([A-Za-z]+)\s+([\s\S]*)$/.exec(buf.trim());
    if (!m) throw new Error(`Dockerfile line ${start}: cannot read "${buf.trim()}"`);
    instructions.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.replace(/\s+/g, ' ').trim(), line: start });
    buf = '';
  }
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`Dockerfile line ${ins.line}: FROM ${ins.args}`);
      const from = m[1]!.replace(/\$\{?(\w+)\}?/g, (_, v: string) => globalArgs.get(v) ?? `$${v}`);
      stages.push({ name: m[2] ?? String(stages.length), from, line: ins.line, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword !== 'ARG') throw new Error(`Dockerfile line ${ins.line}: ${ins.keyword} before the first FROM`);
      const [k, v = ''] = ins.args.split('=');
      globalArgs.set(k!, v);
    } else stages[stages.length - 1]!.instructions.push(ins);
  }
  return { globalArgs, stages };
}

const SECRET_NAME = /PASS(WORD)?|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE|COOKIE/i;

/** Everything wrong with a Dockerfile for Xiaoan, as `line N: message`. Empty means fine. */
function dockerfileProblems(text: string, ci: string): string[] {
  const problems: string[] = [];
  let parsed: Parsed;
  try {
    parsed = parseDockerfile(text);
  } catch (e) {
    return [(e as Error).message];
  }
  const { stages, globalArgs } = parsed;
  const byName = new Map(stages.map((s) => [s.name, s]));
  if (stages.length < 3) problems.push(`only ${stages.length} stage(s); expected a multi-stage build (deps, prod-deps, runtime)`);

  // base images are pinned to a tag (never `latest`), and Node's major is the one package.json wants
  for (const s of stages) {
    if (byName.has(s.from) && byName.get(s.from)!.line < s.line) continue;
    if (!/:[\w.-]+$|@sha256:/.test(s.from) || /:latest$/.test(s.from)) problems.push(`line ${s.line}: base image "${s.from}" must be pinned to a tag`);
    if (/^node:/.test(s.from) && !/^node:20[.-]/.test(s.from)) problems.push(`line ${s.line}: base image ${s.from} is not Node 20 (package.json engines)`);
  }

  // no secrets in ENV or ARG, global or per stage
  const envArgs = [
    ...[...globalArgs.keys()].map((k) => ({ line: 0, kw: 'ARG', name: k })),
    ...stages.flatMap((s) =>
      s.instructions
        .filter((i) => i.keyword === 'ENV' || i.keyword === 'ARG')
        .flatMap((i) => i.args.split(/\s+(?=[A-Za-z_][A-Za-z0-9_]*=)/).map((kv) => ({ line: i.line, kw: i.keyword, name: kv.split('=')[0]! })))),
  ];
  for (const e of envArgs) if (SECRET_NAME.test(e.name)) problems.push(`line ${e.line}: ${e.kw} ${e.name} would bake a secret into the image; pass it at run time as a secret file`);

  // every stage that runs `npm ci` copied package.json and package-lock.json first (in it or in its parent)
  const lineage = (s: Stage): Stage[] => (byName.has(s.from) && byName.get(s.from) !== s ? [...lineage(byName.get(s.from)!), s] : [s]);
  for (const s of stages) {
    for (const ins of s.instructions.filter((i) => i.keyword === 'RUN' && /\bnpm ci\b/.test(i.args))) {
      const before = lineage(s).flatMap((st) => st.instructions).filter((i) => i.line < ins.line);
      if (!before.some((i) => i.keyword === 'COPY' && /\bpackage-lock\.json\b/.test(i.args) && /\bpackage\.json\b/.test(i.args))) {
        problems.push(`line ${ins.line}: npm ci runs before package.json and package-lock.json are copied`);
      }
    }
    for (const ins of s.instructions.filter((i) => i.keyword === 'RUN' && /\bnpm (install|i|add)\b/.test(i.args))) {
      problems.push(`line ${ins.line}: \`npm install\` ignores the lock file; use npm ci`);
    }
  }

  // the npm commands CI runs appear as RUN steps, character for character
  const ciNpm = ci.split('\n').map((l) => l.trim()).filter((l) => /^npm\s/.test(l));
  if (ciNpm.length === 0) problems.push('.ci/run has no npm command to compare with');
  const runs = stages.flatMap((s) => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => ({ stage: s.name, args: i.args })));
  for (const cmd of ciNpm) if (!runs.some((r) => r.args === cmd || r.args.endsWith(`&& ${cmd}`))) problems.push(`CI runs \`${cmd}\` but no Dockerfile RUN step does`);
  const testStage = stages.find((s) => s.instructions.some((i) => i.keyword === 'RUN' && i.args === 'npm test'));
  if (!testStage) problems.push('no stage runs `npm test`');

  // the test stage installs the same system packages as CI
  const ciPkgs = /pkgs=\(([^)]*)\)/.exec(ci)?.[1]?.trim().split(/\s+/) ?? [];
  if (testStage && ciPkgs.length) {
    const installs = testStage.instructions.filter((i) => i.keyword === 'RUN' && /apt-get install/.test(i.args)).map((i) => i.args).join(' ');
    const listed = (installs.split(/apt-get install/)[1] ?? '').split('&&')[0]!.split(/\s+/).filter((w) => w && !w.startsWith('-'));
    const missing = ciPkgs.filter((p) => !listed.includes(p));
    const extra = listed.filter((p) => !ciPkgs.includes(p));
    if (missing.length || extra.length) problems.push(`test stage packages differ from .ci/run: missing ${missing.join(' ') || '-'}, extra ${extra.join(' ') || '-'}`);
  }

  // the shipped images: the final stage (default target) and node-red run as a non-root user with a health check
  const runtime = stages[stages.length - 1]!;
  for (const s of [runtime, byName.get('node-red')].filter(Boolean) as Stage[]) {
    const users = s.instructions.filter((i) => i.keyword === 'USER');
    const user = users[users.length - 1]?.args;
    if (!user) problems.push(`stage ${s.name}: no USER; the image would run as root`);
    else if (/^(root|0)(:|$)/.test(user)) problems.push(`stage ${s.name}: USER ${user} is root`);
    if (!s.instructions.some((i) => i.keyword === 'HEALTHCHECK' && /\bCMD\b/.test(i.args))) problems.push(`stage ${s.name}: no HEALTHCHECK`);
    if (!s.instructions.some((i) => i.keyword === 'ENTRYPOINT')) problems.push(`stage ${s.name}: no ENTRYPOINT`);
  }
  // the runtime image has production dependencies only: node_modules from a stage that ran `npm ci --omit=dev`
  const modules = runtime.instructions.find((i) => i.keyword === 'COPY' && /node_modules/.test(i.args));
  const fromStage = modules && /--from=(\S+)/.exec(modules.args)?.[1];
  const prod = fromStage ? byName.get(fromStage) : undefined;
  if (!prod || !lineage(prod).some((s) => s.instructions.some((i) => i.keyword === 'RUN' && /npm ci\b.*--omit=dev/.test(i.args)))) {
    problems.push(`stage ${runtime.name}: node_modules must come from a stage that ran \`npm ci --omit=dev\``);
  }
  if (lineage(runtime).some((s) => s.instructions.some((i) => i.keyword === 'RUN' && /npm ci(?!.*--omit=dev)/.test(i.args)))) {
    problems.push(`stage ${runtime.name}: installs dev dependencies`);
  }
  const entry = runtime.instructions.find((i) => i.keyword === 'ENTRYPOINT')?.args ?? '';
  if (!/bin\/xiaoan\.js/.test(entry)) problems.push(`stage ${runtime.name}: ENTRYPOINT must run bin/xiaoan.js (the tier is the command)`);

  // files the Dockerfile copies by name exist
  for (const s of stages) {
    for (const ins of s.instructions.filter((i) => i.keyword === 'COPY' && !/--from=/.test(i.args))) {
      const parts = ins.args.split(' ').filter((p) => !p.startsWith('--'));
      for (const src of parts.slice(0, -1)) if (src !== '.' && !existsSync(join(ROOT, src))) problems.push(`line ${ins.line}: COPY ${src}: no such file in the repository`);
    }
  }
  return problems;
}

describe('docker/Dockerfile', () => {
  it('has no problems', () => {
    expect(dockerfileProblems(DOCKERFILE, CI)).toEqual([]);
  });

  it('builds the stages the compose files ask for', () => {
    const names = parseDockerfile(DOCKERFILE).stages.map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['deps', 'test', 'prod-deps', 'node-red', 'runtime']));
    expect(names[names.length - 1]).toBe('runtime');
    const compose = ['school.yaml', 'city.yaml', 'province.yaml'].map((f) => readFileSync(join(ROOT, 'docker', f), 'utf8')).join('\n');
    for (const m of compose.matchAll(/target:\s*(\S+)/g)) expect(names).toContain(m[1]);
  });

  it('the health check script the image runs exists and the sources stage keeps it', () => {
    expect(existsSync(join(ROOT, 'docker/healthcheck.mjs'))).toBe(true);
    expect(DOCKERFILE).toMatch(/! -name healthcheck\.mjs/);
  });

  it('the build context leaves out node_modules, git and secrets', () => {
    const ignore = readFileSync(join(ROOT, 'docker/Dockerfile.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const p of ['node_modules', '.git', 'docker/secrets']) expect(ignore).toContain(p);
  });

  // The checks can fail: each mutation of the real file is caught.
  const mutations: Array<[string, (t: string) => string, RegExp]> = [
    ['runs as root', (t) => t.replace(/USER xiaoan\n(?![\s\S]*USER xiaoan)/, 'USER root\n'), /USER root is root/],
    ['no user at all', (t) => t.replace(/^USER .*$/gm, ''), /no USER/],
    ['no health check', (t) => t.replace(/HEALTHCHECK[^\n]*\\\n[^\n]*\n(?![\s\S]*HEALTHCHECK)/, ''), /no HEALTHCHECK/],
    ['a secret in ENV', (t) => t.replace('ENV NODE_ENV=production \\', 'ENV NODE_ENV=production XIAOAN_UPLINK__PASSWORD=hunter2 \\'), /XIAOAN_UPLINK__PASSWORD would bake a secret/],
    ['a secret in ARG', (t) => t.replace('ARG NODE_IMAGE', 'ARG DB_PASSWORD=x\nARG NODE_IMAGE'), /DB_PASSWORD would bake a secret/],
    ['npm ci before the lock file', (t) => t.replace('COPY package.json package-lock.json ./\nRUN npm ci --no-audit --no-fund', 'RUN npm ci --no-audit --no-fund'), /before package\.json and package-lock\.json/],
    ['npm install', (t) => t.replace('RUN npm ci --omit=dev --no-audit --no-fund', 'RUN npm install --omit=dev'), /ignores the lock file/],
    ['CI command drift', (t) => t.replace('RUN npm ci --no-audit --no-fund', 'RUN npm ci'), /CI runs `npm ci --no-audit --no-fund`/],
    ['dev dependencies shipped', (t) => t.replace('COPY --from=prod-deps /app/node_modules', 'COPY --from=deps /app/node_modules'), /must come from a stage that ran/],
    ['unpinned base image', (t) => t.replace('ARG NODE_IMAGE=node:20-bookworm-slim', 'ARG NODE_IMAGE=node:latest'), /must be pinned/],
    ['package list drift', (t) => t.replace(' socat udev', ' udev'), /missing socat/],
  ];
  it.each(mutations)('catches: %s', (_, mutate, expected) => {
    const mutated = mutate(DOCKERFILE);
    expect(mutated).not.toBe(DOCKERFILE);
    expect(dockerfileProblems(mutated, CI).join('\n')).toMatch(expected);
  });
});

describe('docker/healthcheck.mjs (the image\'s HEALTHCHECK)', () => {
  const run = promisify(execFile);
  const check = (url: string) =>
    run(process.execPath, [join(ROOT, 'docker/healthcheck.mjs')], { env: { PATH: process.env.PATH ?? '', XIAOAN_HEALTH_URL: url } }).then(
      () => 0,
      (e: { code: number }) => e.code,
    );

  it('is healthy on 2xx, unhealthy on 503 and when nothing listens', async () => {
    let status = 200;
    const server = createServer((req, res) => res.writeHead(req.url === '/healthz' ? status : 404).end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/healthz`;
    try {
      expect(await check(url)).toBe(0);
      status = 503;
      expect(await check(url)).toBe(1);
    } finally {
      await new Promise((r) => server.close(r));
    }
    expect(await check(url)).toBe(1);
  });
});
