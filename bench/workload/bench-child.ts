/**
 * One workload run in its own (pinnable) process for the benchmark: argv[2] is the JSON of the
 * WorkloadOptions; prints one line `BENCHJSON {metrics without series, cpu_s}`.
 */
import { runWorkload, type WorkloadOptions } from './engine.js';

const o = JSON.parse(process.argv[2] ?? '{}') as WorkloadOptions;
const cpu0 = process.cpuUsage();
const m = await runWorkload(o).done;
const cpu = process.cpuUsage(cpu0);
const { series: _s, latency_distribution: _d, ...rest } = m;
process.stdout.write(`BENCHJSON ${JSON.stringify({ ...rest, cpu_s: (cpu.user + cpu.system) / 1e6 })}\n`);
process.exit(0);
