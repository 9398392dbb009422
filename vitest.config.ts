import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration suites spawn real coordinator and node processes; on a 2-core machine running
    // several of those suites at once only makes each slower and flakier.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
