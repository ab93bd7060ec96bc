// Fault injection for the crash tests (test/ingest-crash.test.ts): with XIAOAN_TEST_CRASH_AT set to
// one of CRASH_POINTS, the process kills itself with SIGKILL the first time it passes that point —
// no stop(), no flush, exactly what a power cut or the OOM killer does. Off by default: without the
// variable `crashPoint` is a no-op. Only the tests set it; production configs never name it.
export const CRASH_POINTS = ['after-alert-commit', 'after-storage-commit', 'before-receipt'] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

/** Dies here (SIGKILL, this process) when XIAOAN_TEST_CRASH_AT names this point. */
export function crashPoint(point: CrashPoint, env: NodeJS.ProcessEnv = process.env): void {
  if (env.XIAOAN_TEST_CRASH_AT !== point) return;
  process.stderr.write(`XIAOAN_TEST_CRASH_AT=${point}: killing this process (SIGKILL)\n`);
  process.kill(process.pid, 'SIGKILL');
}
