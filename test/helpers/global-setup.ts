import { join } from 'node:path';
import { pino } from 'pino';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../control-plane/db/embedded.js';
import { tempDir } from './tmp.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** a directory with an initialised, stopped Postgres cluster (`pg/`) and its password file: startTestPostgres copies it instead of running initdb */
    pgTemplate: string;
  }
}

/**
 * Once per run: one initialised Postgres cluster that every test file's embedded Postgres starts
 * from a copy of (initdb took about 2 of the 2.5 s each start cost, some 70 times a run).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const t = await tempDir('berth-pg-template-');
  const handle = await startEmbeddedPostgres(join(t.dir, 'pg'), pino({ level: 'silent' }), { durable: false });
  await handle.stop();
  project.provide('pgTemplate', t.dir);
  return () => t.cleanup();
}
