import { defineConfig } from 'vitest/config';

// Two cores: run test files in forked processes, a few at a time, so tests that start brokers,
// databases and Chromium do not starve each other.
export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**', 'data/**', 'bench/**'],
    pool: 'forks',
    maxWorkers: 3,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
