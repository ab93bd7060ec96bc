// What every `xiaoan` subcommand looks like. Each lives in cli/commands/<name>.ts and is listed
// once in cli/commands/index.ts.

export interface CommandIo {
  /** machine-readable output (JSON lines, tables) */
  out(line: string): void;
  /** one-line errors and progress for people */
  err(line: string): void;
  env: NodeJS.ProcessEnv;
}

export interface Command {
  /** e.g. 'demo', 'device read' */
  name: string;
  summary: { zh: string; en: string };
  usage: string;
  /** resolves to the exit code; long-running commands resolve when they are stopped */
  run(args: string[], io: CommandIo): Promise<number>;
}

/** A failure the user can act on: printed as one line, no stack trace, exit code 1 (or `exitCode`). */
export class UserError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'UserError';
  }
}

/** Minimal `--flag value` / `--flag=value` / `--bool` parser; positional args are kept in order. */
export function parseArgs(args: string[], booleans: string[] = []): { flags: Record<string, string | true>; positional: string[] } {
  const flags: Record<string, string | true> = {};
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') { positional.push(...args.slice(i + 1)); break; }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) flags[a.slice(2, eq)] = a.slice(eq + 1);
      else if (booleans.includes(a.slice(2)) || i + 1 >= args.length || args[i + 1]!.startsWith('--')) flags[a.slice(2)] = true;
      else flags[a.slice(2)] = args[++i]!;
    } else positional.push(a);
  }
  return { flags, positional };
}

/** Wait for SIGINT/SIGTERM, then run `stop` once. */
export function untilSignal(stop: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = () => {
      if (stopping) return;
      stopping = true;
      stop().then(() => resolve(0), () => resolve(1));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
}
