/**
 * `berth workloads [ID] [--stop] [--report FILE]`: the workloads you ran on the control plane
 * (`/api/workloads`), one in detail, stop one, or save its HTML report. Starting one is
 * `berth load --remote`.
 */
import { writeFile } from 'node:fs/promises';
import { UsageError } from '../../shared/cli/args.js';
import { EXIT } from '../../shared/client/client.js';
import { defineClientCommand, intOption } from '../../shared/client/command.js';
import { printJson, table } from '../../shared/client/output.js';
import { printable } from '../../shared/client/style.js';
import type { WorkloadMetrics } from './metrics.js';

interface Workload {
  id: number;
  status: string;
  status_reason: string | null;
  config: { app_hostnames: string[]; pattern: string; rps: number; ramp_to_rps?: number; duration_seconds: number; path: string; method: string };
  metrics: WorkloadMetrics | null;
  created_at: string;
  finished_at: string | null;
}

const ms = (v: number | null | undefined) => (v === null || v === undefined ? null : v < 10 ? `${v.toFixed(2)}ms` : v < 1000 ? `${v.toFixed(1)}ms` : `${(v / 1000).toFixed(2)}s`);
const shape = (w: Workload) => `${w.config.pattern} ${w.config.rps}${w.config.ramp_to_rps !== undefined ? `→${w.config.ramp_to_rps}` : ''}/s ${w.config.duration_seconds}s`;

export const run = defineClientCommand({
  usage: 'berth workloads [ID] [--stop] [--report FILE] [--json]',
  description: `Your workload runs on the control plane (start one with \`berth load --remote --app HOST …\`):
the list, newest first; with ID one run's metrics, --stop to stop it, --report FILE to save its HTML report.`,
  positional: { min: 0, max: 1, names: 'ID' },
  options: [
    { name: 'stop', boolean: true, help: 'stop the run ID' },
    { name: 'report', help: 'save the HTML report of run ID to FILE' },
    { name: 'limit', default: '20', help: 'how many runs to list (1–1000)' },
  ],
  async run({ opts, args, json, client, stdout }) {
    const limit = intOption(opts.limit, 'limit', 1, 1000)!;
    if (args.length === 0) {
      if (opts.stop === 'true' || opts.report !== undefined) throw new UsageError('--stop and --report need a workload ID');
      const { workloads } = await client.get<{ workloads: Workload[] }>('/api/workloads', { query: { limit } });
      if (json) { printJson({ workloads }); return EXIT.ok; }
      if (!workloads.length) { stdout.write('No workloads yet. Start one: berth load --remote --app HOST --rps 100 --duration 30s\n'); return EXIT.ok; }
      stdout.write(table(workloads, [
        { header: 'id', value: (w) => w.id },
        { header: 'status', value: (w) => w.status },
        { header: 'apps', value: (w) => w.config.app_hostnames.join(',') },
        { header: 'pattern', value: shape },
        { header: 'requests', value: (w) => w.metrics?.total_requests },
        { header: 'req/s', value: (w) => w.metrics?.requests_per_second },
        { header: 'p99', value: (w) => ms(w.metrics?.p99_latency_ms) },
        { header: 'errors', value: (w) => (w.metrics ? `${w.metrics.error_rate}%` : null) },
        { header: 'started', value: (w) => w.created_at.replace('T', ' ').slice(0, 19) },
      ]));
      return EXIT.ok;
    }
    if (!/^\d{1,15}$/.test(args[0]) || Number(args[0]) < 1) throw new UsageError(`"${args[0]}" is not a workload ID`);
    const id = Number(args[0]);
    let w: Workload = opts.stop === 'true'
      ? await client.post<Workload>(`/api/workloads/${id}/stop`)
      : await client.get<Workload>(`/api/workloads/${id}`);
    if (opts.report !== undefined) {
      const r = await client.stream('GET', `/api/workloads/${id}/report`, { headers: { accept: 'text/html' } });
      const html = await client.readAll(r.body, 'GET', `/api/workloads/${id}/report`);
      await writeFile(opts.report, html);
      w = await client.get<Workload>(`/api/workloads/${id}`);
    }
    if (json) { printJson(w); return EXIT.ok; }
    const m = w.metrics;
    const lines = [
      `workload ${w.id}  ${w.status}${w.status_reason ? ` (${w.status_reason})` : ''}`,
      `  apps        ${w.config.app_hostnames.join(', ')}  ${w.config.method} ${w.config.path}`,
      `  pattern     ${shape(w)}`,
    ];
    if (m) {
      lines.push(
        `  requests    ${m.total_requests} (${m.successful_requests} ok, ${m.failed_requests} failed, ${m.error_rate}%)  late ${m.late_requests}  dropped ${m.dropped_requests}`,
        `  rate        ${m.requests_per_second} req/s achieved, ${m.target_rps} target`,
        `  latency     p50 ${ms(m.p50_latency_ms) ?? '-'}  p90 ${ms(m.p90_latency_ms) ?? '-'}  p99 ${ms(m.p99_latency_ms) ?? '-'}  p99.9 ${ms(m.p999_latency_ms) ?? '-'}  max ${ms(m.max_latency_ms) ?? '-'}`,
        `  statuses    ${Object.entries(m.status_code_distribution).map(([k, v]) => `${k}: ${v}`).join('  ') || '-'}`,
      );
      if (Object.keys(m.errors).length) lines.push(`  errors      ${Object.entries(m.errors).map(([k, v]) => `${k}: ${v}`).join('  ')}`);
    }
    if (opts.report !== undefined) lines.push(`  report      ${opts.report}`);
    stdout.write(printable(lines.join('\n')) + '\n'); // the reason, apps, path, error kinds: all from the API
    return EXIT.ok;
  },
});
