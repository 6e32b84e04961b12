import { UsageError } from '../../shared/cli/args.js';
import type Docker from 'dockerode';
import type { Readable } from 'node:stream';
import { setMaxListeners } from 'node:events';
import type { Logger } from '../../shared/logging.js';
import { DockerUnavailableError, type Runtime } from './docker.js';
import { isTransientDockerError, withRetry } from './retry.js';
import { containerLogs } from './logs.js';

/**
 * Container lifecycle on Docker (the runtime module stays the only dockerode user).
 * Transient daemon errors are retried with exponential backoff and jitter; a daemon that cannot
 * be reached becomes DockerUnavailableError; other failures become ContainerRuntimeError with
 * Docker's own message (bad image, name taken, invalid limits...).
 */

export class ContainerRuntimeError extends Error {
  constructor(message: string, readonly statusCode?: number) {
    super(message);
  }
}

export interface CreateContainerOptions {
  name: string;
  image: string;
  labels: Record<string, string>;
  env: Record<string, string>;
  /** The port the app listens on inside the container (published as tcp). */
  containerPort: number;
  /** Host address the port is published on (default 127.0.0.1). */
  publishHost: string;
  /** Host port; 0/undefined lets Docker choose a free one. */
  hostPort?: number;
  /** CPUs (0.5 = half a core). */
  cpus?: number | null;
  memoryBytes?: number | null;
  /** PID limit (fork bombs stop there). */
  pidsLimit: number;
}

/**
 * Capabilities an app container keeps; every other one (Docker's defaults include NET_RAW,
 * MKNOD, SYS_CHROOT, SETFCAP, SETPCAP, FOWNER, FSETID, DAC_OVERRIDE, AUDIT_WRITE) is dropped.
 * What an ordinary web server needs: bind a port below 1024, start as root and switch to its own
 * user (SETUID/SETGID), chown its cache and temp dirs, and signal its own workers after the
 * switch (KILL; also lets docker-init forward SIGTERM to them). Root in the container no longer
 * bypasses file permissions (DAC_OVERRIDE): an app running as root writes only where the modes
 * allow.
 */
export const CONTAINER_CAPABILITIES = ['CHOWN', 'SETUID', 'SETGID', 'NET_BIND_SERVICE', 'KILL'] as const;

export interface ContainerState {
  dockerId: string;
  name: string;
  running: boolean;
  /** Docker's state word: created, running, exited, dead, ... */
  state: string;
  exitCode: number | null;
  oomKilled: boolean;
  hostPort: number | null;
  ip: string | null;
  labels: Record<string, string>;
  startedAt: string | null;
  /** Docker network mode (the berth app network for containers berth made since it isolates them) */
  network: string | null;
  /** the CPU and memory it was made with (HostConfig NanoCpus / Memory; 0: none) */
  nanoCpus: number;
  memoryBytes: number;
}

export interface ManagedContainer {
  dockerId: string;
  names: string[];
  state: string;
  labels: Record<string, string>;
  /** unix seconds */
  created: number;
  /** published ports as listed (container port → host port) */
  ports: { privatePort: number; publicPort: number | null }[];
  /** addresses on the container's networks */
  ips: string[];
}

export interface DockerEvent {
  action: string;
  dockerId: string;
  labels: Record<string, string>;
}

export interface ContainerRuntime {
  /** The network app containers run on. */
  readonly network: string;
  create(o: CreateContainerOptions): Promise<string>;
  start(dockerId: string): Promise<void>;
  /** SIGTERM, then SIGKILL after `timeoutSec`. Stopping a stopped container is fine. */
  stop(dockerId: string, timeoutSec: number): Promise<void>;
  /** Force-remove; a missing container is not an error. */
  remove(dockerId: string): Promise<void>;
  /** Current state, or null when Docker does not know the container. */
  inspect(dockerId: string, containerPort?: number): Promise<ContainerState | null>;
  /** Containers (running or not) carrying every label given (`key=value` or `key`). */
  listByLabel(labels: string[]): Promise<ManagedContainer[]>;
  /**
   * Follow Docker's event stream for containers with the label; reconnects with backoff until
   * the returned function is called.
   */
  watchEvents(label: string, onEvent: (e: DockerEvent) => void): () => void;
  /** One stats sample (cgroup counters): CPU time used since the container started, memory in use; null when not running or unknown. */
  stats(dockerId: string): Promise<ContainerStats | null>;
  /** What the container has written to its own filesystem (its writable layer, Docker's SizeRw); null when unknown. A walk of the layer: not cheap. */
  writableBytes(dockerId: string): Promise<number | null>;
  /** The last `n` lines it printed (stdout and stderr), read within 2 s; [] when there are none or Docker cannot say. */
  lastLines(dockerId: string, n: number): Promise<string[]>;
  /**
   * The control plane is closing: calls no longer wait between retries (a failed one fails at
   * once, as with the daemon away), so a reconcile pass retrying an unreachable daemon ends now
   * instead of holding up shutdown. Only this runtime's calls: the image and network calls of
   * runtime/docker.ts, and the build queue's, keep their backoff.
   */
  shutdown(): void;
}

export interface ContainerStats {
  /** CPU time the container used since it started, in nanoseconds */
  cpuNs: number;
  /** memory in use (without the page cache), bytes */
  memoryBytes: number;
}

/**
 * The Docker log driver of app containers: json-file rotated at `BERTH_APP_LOG_MAX_SIZE` (default
 * 10m) per file, `BERTH_APP_LOG_MAX_FILE` files (default 3). Without it an app's log grows as long
 * as the container lives.
 */
export function appLogConfig(env: NodeJS.ProcessEnv = process.env): { Type: 'json-file'; Config: { 'max-size': string; 'max-file': string } } {
  const size = env.BERTH_APP_LOG_MAX_SIZE?.trim() || '10m';
  const files = env.BERTH_APP_LOG_MAX_FILE?.trim() || '3';
  if (!/^[1-9]\d{0,5}[kmg]?$/i.test(size)) throw new UsageError(`BERTH_APP_LOG_MAX_SIZE "${size}" must be a size like 10m, 512k or 1g`);
  if (!/^[1-9]\d{0,2}$/.test(files)) throw new UsageError(`BERTH_APP_LOG_MAX_FILE "${files}" must be a number of files from 1 to 999`);
  return { Type: 'json-file', Config: { 'max-size': size.toLowerCase(), 'max-file': files } };
}

const status = (e: unknown) => (e as { statusCode?: number }).statusCode;

export function createContainerRuntime(runtime: Runtime, parentLog: Logger): ContainerRuntime {
  const docker = runtime.docker;
  const log = parentLog.child({ component: 'runtime.containers' });
  // read once, at startup: a bad setting stops the control plane with its name, instead of
  // failing every container it would create
  const logConfig = appLogConfig();

  const closing = new AbortController();
  // (every wait between retries listens on it: more than ten at once is normal, not a leak)
  setMaxListeners(0, closing.signal);

  async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await withRetry(fn, {
        attempts: 5,
        baseMs: 200,
        maxMs: 3000,
        isTransient: isTransientDockerError,
        signal: closing.signal,
        onRetry: (e, attempt, delay) => log.warn({ err: (e as Error).message, attempt, delayMs: Math.round(delay) }, `docker ${what} failed; retrying`),
      });
    } catch (e) {
      if (isTransientDockerError(e)) throw new DockerUnavailableError(`Docker daemon unreachable at ${runtime.endpoint} (${what}): ${(e as Error).message}`);
      throw e;
    }
  }

  const dockerMessage = (e: unknown) => {
    const err = e as { json?: { message?: string }; message?: string };
    return err.json?.message ?? err.message ?? String(e);
  };

  /** The berth networks (and a required egress guard) in place, or a ContainerRuntimeError saying why not. */
  async function networksReady(): Promise<void> {
    try {
      await runtime.ensureNetworks();
    } catch (e) {
      if (e instanceof DockerUnavailableError) throw e;
      throw new ContainerRuntimeError(`could not set up Docker network ${runtime.networks.app}: ${dockerMessage(e)}`, status(e));
    }
  }

  async function create(o: CreateContainerOptions): Promise<string> {
    await networksReady();
    const portKey = `${o.containerPort}/tcp`;
    const hostConfig: Docker.HostConfig = {
      PortBindings: { [portKey]: [{ HostIp: o.publishHost, HostPort: o.hostPort ? String(o.hostPort) : '' }] },
      RestartPolicy: { Name: 'no' },
      // docker-init as PID 1 forwards SIGTERM to the app, so apps that install no handler still stop gracefully
      Init: true,
      // Tenant isolation: a bridge without inter-container traffic (the proxy and the health checks
      // reach the app from the host, through the published port or the container address)...
      NetworkMode: runtime.networks.app,
      // ...and a container that cannot gain privileges, with few capabilities and bounded PIDs
      SecurityOpt: ['no-new-privileges:true'],
      CapDrop: ['ALL'],
      CapAdd: [...CONTAINER_CAPABILITIES],
      PidsLimit: o.pidsLimit,
      // Docker's log of an app is rotated: the disk it takes and every log read stay bounded
      LogConfig: logConfig,
    };
    if (o.cpus) hostConfig.NanoCpus = Math.round(o.cpus * 1e9);
    if (o.memoryBytes) { hostConfig.Memory = o.memoryBytes; hostConfig.MemorySwap = o.memoryBytes; }
    const spec: Docker.ContainerCreateOptions = {
      name: o.name,
      Image: o.image,
      Labels: o.labels,
      Env: Object.entries(o.env).map(([k, v]) => `${k}=${v}`),
      ExposedPorts: { [portKey]: {} },
      HostConfig: hostConfig,
    };
    try {
      const c = await call('create', () => docker.createContainer(spec));
      return c.id;
    } catch (e) {
      if (e instanceof DockerUnavailableError) throw e;
      if (status(e) === 409) {
        // A container with this name exists: a previous attempt that died before we stored its id.
        const existing = await inspect(o.name).catch(() => null);
        if (existing && existing.labels['berth.managed'] === 'true' && existing.labels['berth.container'] === o.labels['berth.container']) {
          await remove(existing.dockerId);
          const c = await call('create', () => docker.createContainer(spec));
          return c.id;
        }
      }
      throw new ContainerRuntimeError(`could not create container ${o.name} from ${o.image}: ${dockerMessage(e)}`, status(e));
    }
  }

  async function start(id: string): Promise<void> {
    // (an existing container starts on a berth network too: with the egress guard required, not
    // before the guard is in place)
    await networksReady();
    try {
      await call('start', () => docker.getContainer(id).start());
    } catch (e) {
      if (status(e) === 304) return; // already started
      if (e instanceof DockerUnavailableError) throw e;
      throw new ContainerRuntimeError(`could not start container ${id.slice(0, 12)}: ${dockerMessage(e)}`, status(e));
    }
  }

  async function stop(id: string, timeoutSec: number): Promise<void> {
    try {
      await call('stop', () => docker.getContainer(id).stop({ t: timeoutSec }));
    } catch (e) {
      if (status(e) === 304 || status(e) === 404) return; // already stopped / gone
      if (e instanceof DockerUnavailableError) throw e;
      throw new ContainerRuntimeError(`could not stop container ${id.slice(0, 12)}: ${dockerMessage(e)}`, status(e));
    }
  }

  async function remove(id: string): Promise<void> {
    try {
      await call('remove', () => docker.getContainer(id).remove({ force: true, v: true }));
    } catch (e) {
      if (status(e) === 404) return;
      // 409 "removal already in progress" is as good as done
      if (status(e) === 409 && /already in progress/i.test(dockerMessage(e))) return;
      if (e instanceof DockerUnavailableError) throw e;
      throw new ContainerRuntimeError(`could not remove container ${id.slice(0, 12)}: ${dockerMessage(e)}`, status(e));
    }
  }

  async function inspect(id: string, containerPort?: number): Promise<ContainerState | null> {
    let info: Docker.ContainerInspectInfo;
    try {
      info = await call('inspect', () => docker.getContainer(id).inspect());
    } catch (e) {
      if (status(e) === 404) return null;
      throw e;
    }
    const ports = info.NetworkSettings?.Ports ?? {};
    const key = containerPort ? `${containerPort}/tcp` : Object.keys(ports)[0];
    const binding = key ? ports[key]?.find((b) => b.HostIp === '127.0.0.1' || b.HostIp === '0.0.0.0' || b.HostIp === '') ?? ports[key]?.[0] : undefined;
    const nets = Object.values(info.NetworkSettings?.Networks ?? {});
    const ip = (info.NetworkSettings as { IPAddress?: string } | undefined)?.IPAddress || nets.find((n) => n.IPAddress)?.IPAddress || null;
    return {
      dockerId: info.Id,
      name: info.Name.replace(/^\//, ''),
      running: info.State.Running,
      state: info.State.Status,
      exitCode: info.State.Running ? null : info.State.ExitCode,
      oomKilled: info.State.OOMKilled,
      hostPort: binding?.HostPort ? Number(binding.HostPort) : null,
      ip: ip || null,
      labels: info.Config.Labels ?? {},
      startedAt: info.State.StartedAt ?? null,
      network: info.HostConfig?.NetworkMode ?? null,
      nanoCpus: info.HostConfig?.NanoCpus ?? 0,
      memoryBytes: info.HostConfig?.Memory ?? 0,
    };
  }

  async function listByLabel(labels: string[]): Promise<ManagedContainer[]> {
    const list = await call('list', () => docker.listContainers({ all: true, filters: JSON.stringify({ label: labels }) }));
    return list.map((c) => ({
      dockerId: c.Id, names: c.Names.map((n) => n.replace(/^\//, '')), state: c.State, labels: c.Labels ?? {}, created: c.Created,
      ports: (c.Ports ?? []).filter((p) => p.Type === 'tcp').map((p) => ({ privatePort: p.PrivatePort, publicPort: p.PublicPort ?? null })),
      ips: Object.values(c.NetworkSettings?.Networks ?? {}).map((n) => n.IPAddress).filter((ip): ip is string => !!ip),
    }));
  }

  function watchEvents(label: string, onEvent: (e: DockerEvent) => void): () => void {
    let stopped = false;
    let stream: Readable | undefined;
    let attempt = 0;
    let timer: NodeJS.Timeout | undefined;
    const connect = async () => {
      if (stopped) return;
      try {
        stream = (await docker.getEvents({ filters: JSON.stringify({ type: ['container'], label: [label] }) })) as unknown as Readable;
      } catch (e) {
        return retry(e);
      }
      if (stopped) { stream.destroy(); return; }
      attempt = 0;
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) !== -1) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (!line) continue;
          try {
            const ev = JSON.parse(line) as { Action?: string; status?: string; id?: string; Actor?: { ID?: string; Attributes?: Record<string, string> } };
            onEvent({ action: ev.Action ?? ev.status ?? '', dockerId: ev.Actor?.ID ?? ev.id ?? '', labels: ev.Actor?.Attributes ?? {} });
          } catch { /* partial or foreign line */ }
        }
      });
      stream.on('error', () => {});
      stream.on('close', () => retry(new Error('event stream closed')));
    };
    const retry = (e: unknown) => {
      if (stopped) return;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(attempt++, 6)) * (0.5 + Math.random() / 2);
      log.debug({ err: (e as Error).message, retryInMs: Math.round(delay) }, 'docker event stream unavailable; retrying');
      timer = setTimeout(() => void connect(), delay);
      timer.unref();
    };
    void connect();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      stream?.destroy();
    };
  }

  async function stats(id: string): Promise<ContainerStats | null> {
    let s: Docker.ContainerStats;
    try {
      // one sample, no second read a second later (one-shot, Docker API 1.41+)
      s = await call('stats', () => docker.getContainer(id).stats({ stream: false, 'one-shot': true } as { stream: false }));
    } catch (e) {
      if (status(e) === 404 || status(e) === 409) return null;
      throw e;
    }
    const cpu = s.cpu_stats?.cpu_usage?.total_usage;
    if (typeof cpu !== 'number' || !s.read || s.read.startsWith('0001-')) return null;
    const mem = s.memory_stats ?? ({} as Docker.ContainerStats['memory_stats']);
    const ms = (mem.stats ?? {}) as unknown as Record<string, number>;
    // what `docker stats` shows: usage minus inactive file cache (cgroup v2) or cache (v1)
    const cache = ms.inactive_file ?? ms.total_inactive_file ?? ms.cache ?? 0;
    return { cpuNs: cpu, memoryBytes: Math.max(0, (mem.usage ?? 0) - cache) };
  }

  async function writableBytes(id: string): Promise<number | null> {
    const info = await call('inspect', () => docker.getContainer(id).inspect({ size: true, abortSignal: AbortSignal.timeout(60_000) } as object)).catch(() => null) as { SizeRw?: number } | null;
    return typeof info?.SizeRw === 'number' ? info.SizeRw : null;
  }

  async function lastLines(id: string, n: number): Promise<string[]> {
    const s = await containerLogs(runtime, id, { follow: false, tail: n }).catch(() => null);
    if (s === null) return [];
    return new Promise((resolve) => {
      const out: string[] = [];
      const t = setTimeout(() => s.close(), 2000);
      s.onLine((l) => { out.push(l.text); });
      s.onEnd(() => { clearTimeout(t); resolve(out.slice(-n)); });
    });
  }

  return {
    network: runtime.networks.app, create, start, stop, remove, inspect, listByLabel, watchEvents, stats, writableBytes, lastLines,
    shutdown: () => closing.abort(),
  };
}
