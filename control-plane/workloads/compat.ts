/**
 * The original platform's workload paths, answered with its shapes (`test_id`, `tests`, `services`)
 * on top of the same service as `/api/workloads`, authenticated like the rest of the API:
 * `POST /workload/start`, `POST /workload/stop/:test_id`, `GET /workload/status/:test_id`,
 * `GET /workload/list`, `GET /workload/metrics/:test_id`, `GET /workload/available-services`.
 * `/workload/start` takes the API's body plus the aliases `requests_per_second` (rps) and
 * `duration` (duration_seconds).
 */
import type { FastifyInstance } from 'fastify';
import { idParams } from '../http/schemas.js';
import type { WorkloadService } from './plugin.js';
import { startBody, type StartBody } from './schema.js';
import { listWorkloads, publicConfig, userHostnames } from './repo.js';
import { hostUrl } from '../../shared/client/urls.js';

const compatBody = {
  ...startBody,
  properties: {
    ...startBody.properties,
    requests_per_second: startBody.properties.rps,
    duration: startBody.properties.duration_seconds,
  },
} as const;

type CompatBody = StartBody & { requests_per_second?: number; duration?: number };
type TestReq = { Params: { test_id: number } };

export async function compatRoutes(app: FastifyInstance, service: WorkloadService): Promise<void> {
  const auth = { preHandler: app.authenticate };
  const params = idParams('test_id');

  app.post<{ Body: CompatBody }>('/workload/start', {
    ...auth,
    schema: { summary: 'Start a workload (original platform path; same body as POST /api/workloads)', tags: ['workloads'], body: compatBody } as Record<string, unknown>,
  }, async (req) => {
    const { requests_per_second, duration, ...b } = req.body;
    const row = await service.start(req.user!.id, { ...b, rps: b.rps ?? requests_per_second, duration_seconds: b.duration_seconds ?? duration });
    return { test_id: row.id, status: 'running', message: `workload ${row.id} started`, config: publicConfig(row.config) };
  });

  app.post<TestReq>('/workload/stop/:test_id', {
    ...auth,
    schema: { summary: 'Stop a running workload (original platform path)', tags: ['workloads'], params } as Record<string, unknown>,
  }, async (req) => {
    const r = await service.stop(req.user!.id, req.params.test_id);
    return { test_id: r.id, status: r.status, message: `workload ${r.id} ${r.status}` };
  });

  app.get<TestReq>('/workload/status/:test_id', {
    ...auth,
    schema: { summary: 'Status and summary metrics of a workload (original platform path)', tags: ['workloads'], params } as Record<string, unknown>,
  }, async (req) => {
    const v = service.view(await service.get(req.user!.id, req.params.test_id));
    const m = v.metrics;
    return {
      test_id: v.id, status: v.status, status_reason: v.status_reason, config: v.config,
      progress: m ? { elapsed_seconds: m.duration_seconds, duration_seconds: v.config.duration_seconds } : null,
      metrics: m ? { ...m, series: undefined, latency_distribution: undefined } : null,
      created_at: v.created_at, finished_at: v.finished_at,
    };
  });

  app.get('/workload/list', {
    ...auth,
    schema: { summary: 'Your workloads, newest first (original platform path)', tags: ['workloads'] } as Record<string, unknown>,
  }, async (req) => {
    const rows = await listWorkloads(app.db, req.user!.id, 100);
    return {
      tests: rows.map((r) => {
        const v = service.view(r);
        return {
          test_id: v.id, status: v.status, pattern: v.config.pattern, app_hostnames: v.config.app_hostnames, rps: v.config.rps,
          duration_seconds: v.config.duration_seconds, total_requests: v.metrics?.total_requests ?? 0,
          requests_per_second: v.metrics?.requests_per_second ?? 0, p99_latency_ms: v.metrics?.p99_latency_ms ?? null,
          error_rate: v.metrics?.error_rate ?? 0, created_at: v.created_at, finished_at: v.finished_at,
        };
      }),
    };
  });

  app.get<TestReq>('/workload/metrics/:test_id', {
    ...auth,
    schema: { summary: 'Full metrics of a workload with the per-second series (original platform path)', tags: ['workloads'], params } as Record<string, unknown>,
  }, async (req) => {
    const v = service.view(await service.get(req.user!.id, req.params.test_id));
    return { test_id: v.id, status: v.status, metrics: v.metrics };
  });

  app.get('/workload/available-services', {
    ...auth,
    schema: { summary: 'The apps you can send a workload to (original platform path)', tags: ['workloads'] } as Record<string, unknown>,
  }, async (req) => {
    const hosts = await userHostnames(app.db, req.user!.id);
    return { services: hosts.map((h) => ({ app_hostname: h, name: h, url: hostUrl(h, app.publicInfo.proxyUrl) })) };
  });
}
