import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // one initialised Postgres cluster per run, copied by each test file's embedded Postgres
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Suites start real processes (proxies, Postgres, Docker); two cores cannot run many at once.
    fileParallelism: true,
    maxWorkers: 2,
    pool: 'forks',
    // The autoscaler would scale down the containers suites create by hand; the suites that test
    // it turn it on (startControlPlane({ autoscale: { enabled: true, … } })).
    env: { BERTH_AUTOSCALE: 'off' },
  },
});
