import Consul from 'consul';
import type { Logger } from '../../shared/logging.js';
import type { Db } from '../db/pool.js';

interface HealthyRow {
  id: number; user_id: number; image_id: number; name: string; host_port: number;
  app_hostname: string; health_path: string | null; image_name: string;
}

/** Consul service id of a container: scoped to the berth cluster (database), so two berth
 * installations registering with one agent never collide or deregister each other's. */
export const serviceId = (clusterId: string, containerId: number) => `berth-${clusterId}-c${containerId}`;

/** Ids of registered services that belong to this cluster but are not wanted any more. */
export function staleServiceIds(
  existing: Record<string, { ID: string; Meta?: Record<string, string> | null }>,
  clusterId: string,
  want: Set<string>,
): string[] {
  const prefix = `berth-${clusterId}-c`;
  return Object.keys(existing).filter((id) =>
    id.startsWith(prefix) && /^\d+$/.test(id.slice(prefix.length)) && existing[id].Meta?.cluster === clusterId && !want.has(id));
}

/** "127.0.0.1:8500", "http://consul:8500", "https://…" → client options. */
export function consulOptions(addr: string): { host: string; port: number; secure: boolean } {
  const u = new URL(/^[a-z]+:\/\//i.test(addr) ? addr : `http://${addr}`);
  return { host: u.hostname, port: Number(u.port || (u.protocol === 'https:' ? 443 : 8500)), secure: u.protocol === 'https:' };
}

/**
 * Keeps the Consul agent's services equal to the healthy containers: each is registered as
 * `berth-{cluster}-c{id}` (service name `berth-u{user}-i{image}`, tags `berth` and its app_hostname, meta
 * with ids) with Consul's own HTTP or TCP check; services of containers that stopped, went
 * unhealthy or were deleted are deregistered — only this cluster's (id prefix and meta.cluster). Syncs on every change (coalesced) and every
 * `intervalMs`; a Consul outage is retried at the next sync.
 */
export class ConsulSync {
  readonly consul: Consul;
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  lastError = '';

  constructor(private readonly db: Db, addr: string, private readonly endpointHost: string, private readonly log: Logger, private readonly intervalMs = 5000, private readonly enabled: () => boolean = () => true, private readonly clusterId = 'default') {
    this.consul = new Consul(consulOptions(addr));
  }

  start(): void {
    this.stopped = false;
    this.schedule();
    this.timer = setInterval(() => this.schedule(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    await this.running?.catch(() => {});
  }

  schedule(): void {
    if (this.stopped || this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      if (this.running || !this.enabled()) return;
      this.running = this.sync().then(() => {}, (e) => {
        this.lastError = (e as Error).message;
        this.log.warn({ err: this.lastError }, 'consul sync failed; retrying at the next sync');
      }).finally(() => { this.running = undefined; });
    }, 100);
    this.soon.unref();
  }

  /** One sync pass; returns what changed. */
  async sync(): Promise<{ registered: string[]; deregistered: string[] }> {
    const { rows } = await this.db.query<HealthyRow>(
      `SELECT c.id, c.user_id, c.image_id, c.name, c.host_port, i.app_hostname, i.health_path, i.name AS image_name
         FROM containers c JOIN images i ON i.id = c.image_id
        WHERE c.status = 'running' AND c.desired = 'running' AND c.health = 'healthy' AND c.host_port IS NOT NULL`);
    const existing = (await this.consul.agent.service.list()) as Record<string, { ID: string; Port: number; Address: string; Tags?: string[]; Meta?: Record<string, string> | null }>;
    const want = new Map(rows.map((r) => [serviceId(this.clusterId, r.id), r]));
    const registered: string[] = [];
    const deregistered: string[] = [];
    for (const [id, r] of want) {
      const cur = existing[id];
      // (registered again when its health check changed: a PATCHed health_path)
      if (cur && cur.Port === r.host_port && cur.Address === this.endpointHost && cur.Meta?.cluster === this.clusterId && (cur.Meta?.health_path ?? '') === (r.health_path ?? '')) continue;
      const target = `${this.endpointHost}:${r.host_port}`;
      await this.consul.agent.service.register({
        id, name: `berth-u${r.user_id}-i${r.image_id}`, address: this.endpointHost, port: r.host_port,
        tags: ['berth', r.app_hostname],
        meta: { cluster: this.clusterId, app_hostname: r.app_hostname, container_id: String(r.id), image_id: String(r.image_id), user_id: String(r.user_id), container_name: r.name, image_name: r.image_name, health_path: r.health_path ?? '' },
        check: {
          // redirects not followed: the app would otherwise have the agent GET any URL from the
          // host's network (127.0.0.1:9901, a metadata service) and keep the answer as the check's output
          ...(r.health_path ? { http: `http://${target}${r.health_path}`, disableredirects: true } : { tcp: target }),
          interval: '10s', timeout: '2s', deregistercriticalserviceafter: '5m',
        },
      } as never);
      registered.push(id);
    }
    for (const id of staleServiceIds(existing, this.clusterId, new Set(want.keys()))) {
      await this.consul.agent.service.deregister(id);
      deregistered.push(id);
    }
    if (registered.length || deregistered.length) this.log.info({ registered, deregistered }, 'consul services synced');
    this.lastError = '';
    return { registered, deregistered };
  }
}
