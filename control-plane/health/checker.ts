import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import type { Logger } from '../../shared/logging.js';
import type { Db } from '../db/pool.js';

export interface HealthSettings {
  intervalMs: number;
  timeoutMs: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
  /** a starting instance that has not answered this long is said to be unhealthy (default 30 s) */
  startupGraceMs?: number;
}

export interface ProbeTarget {
  /** address that reaches the published port (what the proxy uses) */
  host: string;
  port: number;
  /** container address on its Docker network, for TCP checks (a published port always accepts) */
  containerIp: string | null;
  internalPort: number | null;
  /** HTTP GET path; null → TCP connect */
  path: string | null;
}

/**
 * One probe. HTTP: GET `path` on the published port, healthy on 2xx/3xx within the timeout.
 * TCP: connect to the container's own address and port — not the published port, which
 * Docker's userland proxy accepts even when nothing listens behind it. Without a container
 * address, TCP connects to the published port and requires the connection to stay open briefly
 * (docker-proxy closes it at once when the app does not listen).
 */
export function probe(t: ProbeTarget, timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (ok: boolean, detail: string) => { if (!settled) { settled = true; clearTimeout(timer); resolve({ ok, detail }); } };
    const timer = setTimeout(() => { cleanup(); finish(false, `no answer within ${timeoutMs}ms`); }, timeoutMs);
    let cleanup = () => {};
    if (t.path) {
      const req = httpRequest({ host: t.host, port: t.port, path: t.path, method: 'GET', agent: false, headers: { 'user-agent': 'berth-health/1', connection: 'close' } }, (res) => {
        const code = res.statusCode ?? 0;
        finish(code >= 200 && code < 400, `HTTP ${code} from GET ${t.path}`);
        // the status is all we need: close the connection now (a health endpoint that streams
        // would otherwise keep one socket open per probe, forever)
        res.destroy();
        req.destroy();
      });
      req.on('error', (e) => finish(false, `GET ${t.path}: ${e.message}`));
      req.end();
      cleanup = () => req.destroy();
    } else if (t.containerIp && t.internalPort) {
      const s = connect({ host: t.containerIp, port: t.internalPort });
      s.on('connect', () => { s.destroy(); finish(true, 'tcp connect ok'); });
      s.on('error', (e) => finish(false, `tcp connect ${t.containerIp}:${t.internalPort}: ${e.message}`));
      cleanup = () => s.destroy();
    } else {
      const s = connect({ host: t.host, port: t.port });
      let hold: NodeJS.Timeout | undefined;
      s.on('connect', () => { hold = setTimeout(() => { s.destroy(); finish(true, 'tcp connect ok'); }, Math.min(150, timeoutMs / 2)); });
      s.on('close', () => { if (hold) clearTimeout(hold); finish(false, 'connection closed at once: nothing listens in the container'); });
      s.on('error', (e) => finish(false, `tcp connect: ${e.message}`));
      cleanup = () => s.destroy();
    }
  });
}

interface Tracked {
  successes: number;
  failures: number;
  nextAt: number;
  inFlight: boolean;
  key: string;
  /** when probing of this incarnation (port, address, path) began */
  since: number;
}

/** A starting instance that has not answered a probe this long is said to be unhealthy. */
const STARTUP_GRACE_MS = 30_000;

interface RunningRow {
  id: number;
  health: string;
  host_port: number;
  container_ip: string | null;
  internal_port: number | null;
  health_path: string | null;
}

/**
 * Active health checks of every running container. Containers whose health is still unknown
 * (starting) are probed every 25 ms so that a new container gets traffic as soon as it answers
 * (readiness: a cold start waits for it); known ones every `intervalMs`. `healthyThreshold` consecutive successes make a
 * container healthy, `unhealthyThreshold` consecutive failures unhealthy; the transition (and
 * its event) is written by `onTransition`.
 */
export class HealthChecker {
  private tracked = new Map<number, Tracked>();
  /** probe interval of a starting container (and of the loop while one starts) */
  private readonly startingMs: number;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private stopped = true;

  constructor(
    private readonly db: Db,
    private readonly s: HealthSettings,
    private readonly endpointHost: string,
    private readonly onTransition: (id: number, health: 'healthy' | 'unhealthy', detail: string, probedPort: number) => Promise<unknown>,
    private readonly log: Logger,
    private readonly fastMs = 200,
    private readonly enabled: () => boolean = () => true,
  ) {
    this.startingMs = Math.min(25, fastMs);
  }

  start(): void {
    this.stopped = false;
    this.loop();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Probe this container at the next tick (just started). */
  kick(id: number): void {
    const t = this.tracked.get(id);
    if (t) t.nextAt = 0;
    if (!this.stopped && !this.ticking) { if (this.timer) clearTimeout(this.timer); this.loop(0); }
  }

  private loop(delay = this.fastMs): void {
    if (this.stopped) return;
    this.timer = setTimeout(async () => {
      this.ticking = true;
      let starting = false;
      try { if (this.enabled()) starting = await this.tick(); } catch (e) { this.log.warn({ err: e }, 'health check round failed'); }
      this.ticking = false;
      // while an instance starts, look again soon: a cold start waits for its first good probe
      this.loop(starting ? this.startingMs : this.fastMs);
    }, delay);
    this.timer.unref();
  }

  /** Whether some container is still starting (health unknown). */
  private async tick(): Promise<boolean> {
    const { rows } = await this.db.query<RunningRow>(
      `SELECT c.id, c.health, c.host_port, c.container_ip, c.internal_port, i.health_path
         FROM containers c JOIN images i ON i.id = c.image_id
        WHERE c.status = 'running' AND c.host_port IS NOT NULL`);
    const now = Date.now();
    const seen = new Set<number>();
    for (const r of rows) {
      seen.add(r.id);
      const key = `${r.host_port}|${r.container_ip}|${r.health_path}`;
      let t = this.tracked.get(r.id);
      if (!t || t.key !== key) {
        t = { successes: 0, failures: 0, nextAt: 0, inFlight: false, key, since: now };
        this.tracked.set(r.id, t);
      }
      // (the grace counts from the last time it was not starting: a restart on the same port starts it again)
      if (r.health !== 'unknown') t.since = now;
      if (t.inFlight || t.nextAt > now) continue;
      t.inFlight = true;
      const tr = t;
      void probe({ host: this.endpointHost, port: r.host_port, containerIp: r.container_ip, internalPort: r.internal_port, path: r.health_path }, this.s.timeoutMs)
        .then(async (res) => {
          if (res.ok) { tr.successes++; tr.failures = 0; } else { tr.failures++; tr.successes = 0; }
          const next = r.health === 'unknown' && !res.ok ? this.startingMs : this.s.intervalMs;
          tr.nextAt = Date.now() + next;
          if (res.ok && r.health !== 'healthy' && tr.successes >= this.s.healthyThreshold) await this.onTransition(r.id, 'healthy', res.detail, r.host_port);
          else if (!res.ok && r.health === 'healthy' && tr.failures >= this.s.unhealthyThreshold) await this.onTransition(r.id, 'unhealthy', res.detail, r.host_port);
          else if (!res.ok && r.health === 'unknown' && tr.failures >= this.s.unhealthyThreshold && Date.now() - tr.since >= (this.s.startupGraceMs ?? STARTUP_GRACE_MS)) {
            // never came up within 30 s (by the clock: a probe that hangs until its timeout took a
            // second each, so counting probes meant 20 minutes of the fast loop): say so (it stays
            // out of rotation either way)
            await this.onTransition(r.id, 'unhealthy', res.detail, r.host_port);
          }
        })
        .catch((e) => this.log.warn({ err: e, containerId: r.id }, 'health transition failed'))
        .finally(() => { tr.inFlight = false; });
    }
    for (const id of this.tracked.keys()) if (!seen.has(id)) this.tracked.delete(id);
    return rows.some((r) => r.health === 'unknown');
  }
}
