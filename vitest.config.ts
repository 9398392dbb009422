import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each file's node ledgers in a temporary folder, never the user's ~/.fedmark/ledgers.
    setupFiles: ['test/helpers/isolated-env.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two test files at a time, one per core of this project's machines (the whole suite takes
    // about 4 minutes). Integration suites spawn real coordinator and node processes, so two of
    // them side by side oversubscribe the cores: their timeouts are generous and no test asserts
    // a wall-clock figure (benchmarks live in `npm run bench`).
    fileParallelism: true,
    maxWorkers: 2,
  },
});
