import { defineConfig } from 'vitest/config';

/** files that mock modules (vi.mock), which would leak into the files after them in a shared graph */
const ISOLATED = ['test/control-plane/response-schemas.test.ts'];

export default defineConfig({
  test: {
    // one initialised, migrated Postgres cluster per run, and a running copy per worker (each control plane: a database of its own there)
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
    // (include is per project: a project's own is added to the root's, not put in its place.)
    // A worker runs file after file in one module graph (importing the control plane's ~200
    // modules once, not per file: 1.5–2.5 s each). A file that mocks modules gets a fresh one.
    projects: [
      { extends: true, test: { name: 'shared', include: ['test/**/*.test.ts'], exclude: ISOLATED, isolate: false } },
      { extends: true, test: { name: 'isolated', include: ISOLATED } },
    ],
  },
});
