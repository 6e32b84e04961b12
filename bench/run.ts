/**
 * `npm run bench`: micro benchmarks (tinybench, in-process) then the macro benchmark
 * (proxies under load), then the workload generator's (bench/workload/bench.ts), then cold starts
 * of a scaled-to-zero app (bench/coldstart/run.ts; needs Docker, skipped without it).
 * BENCH_ONLY=micro|macro|workload|coldstart runs one of them. Tables go to stdout,
 * progress to stderr, and everything measured to .bench-out/bench-<time>.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runMacro } from './macro/run.js';
import { runMicro } from './micro/run.js';
import { runWorkloadBench } from './workload/bench.js';
import { runColdStartBench } from './coldstart/run.js';
import { repoRoot } from './macro/targets.js';

const only = process.env.BENCH_ONLY ?? process.argv.find((a) => a.startsWith('--only='))?.slice(7);
if (only && only !== 'micro' && only !== 'macro' && only !== 'workload' && only !== 'coldstart') {
  process.stderr.write(`bench: BENCH_ONLY must be micro, macro, workload or coldstart, got "${only}"\n`);
  process.exit(2);
}

const result: Record<string, unknown> = { startedAt: new Date().toISOString() };
let failed = false;
try {
  if (!only || only === 'micro') result.micro = await runMicro();
  if (!only || only === 'macro') result.macro = await runMacro();
  if (!only || only === 'workload') result.workload = await runWorkloadBench();
  if (!only || only === 'coldstart') result.coldstart = await runColdStartBench();
} catch (e) {
  failed = true;
  result.error = (e as Error).stack ?? String(e);
  process.stderr.write(`bench: ${(e as Error).stack ?? e}\n`);
}
result.finishedAt = new Date().toISOString();
const outDir = join(repoRoot, '.bench-out');
mkdirSync(outDir, { recursive: true });
const file = join(outDir, `bench-${(result.startedAt as string).replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify(result, null, 2));
process.stdout.write(`\nresults written to ${file}\n`);
process.exit(failed ? 1 : 0);
