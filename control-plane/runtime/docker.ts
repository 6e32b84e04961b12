import { isLoopbackName } from '../../shared/hostname.js';
import Docker from 'dockerode';
import { createReadStream, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { lstat, readdir, readlink, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import type { Logger } from '../../shared/logging.js';
import { UsageError } from '../../shared/cli/args.js';
import { buildCgroups, type BuildCgroups } from './build-cgroup.js';
import { BuildDiskWatch, freeBelow, SHORT_OF_DISK } from './build-disk.js';
import { removeLeftovers, StepImages } from './build-leftovers.js';
import { isTransientDockerError, withRetry } from './retry.js';
import type { EgressGuard } from './egress.js';

/**
 * The only module that talks to Docker. Everything here retries transient daemon errors with
 * backoff and turns an unreachable daemon into a clear DockerUnavailableError quickly.
 * (Issue 4 adds container lifecycle functions next to buildImage.)
 */

export class DockerUnavailableError extends Error {}
export class BuildError extends Error {}

export interface BuildImageOptions {
  /** Directory holding the build context with a Dockerfile at its root. */
  contextDir: string;
  /** Full reference, e.g. berth-u1-i2:latest */
  tag: string;
  labels: Record<string, string>;
  /** Called with each chunk of build output as it arrives. */
  onOutput: (text: string) => void;
  signal?: AbortSignal;
  /** what the build's steps may use (null: no limit) */
  memoryBytes?: number | null;
  cpus?: number | null;
  /** processes all its steps together may run at once (build-cgroup.ts); null: no limit */
  pids?: number | null;
  /** bytes its steps may write in all, and the finished image may have (build-disk.ts); null: no limit */
  diskBytes?: number | null;
  /** stop it when the daemon's disk has less free than this (build-disk.ts); null: no floor */
  minFreeBytes?: number | null;
}

/** What a build needs to know about an image it reads (FROM, COPY --from). */
export interface ImageInfo {
  id: string;
  repoTags: string[];
  labels: Record<string, string>;
  /** ONBUILD triggers: instructions a build FROM it runs first (build-check.ts refuses them) */
  onBuild: string[];
}

/** The option that turns inter-container traffic off on a bridge network. */
export const ICC_OPTION = 'com.docker.network.bridge.enable_icc';
/** A bridge network's interface name when it was given one (else Docker's `br-` + 12 id digits). */
const BRIDGE_NAME_OPTION = 'com.docker.network.bridge.name';

export interface BerthNetworks {
  /** app containers */
  app: string;
  /** build steps (RUN) */
  build: string;
}

export interface Runtime {
  readonly docker: Docker;
  /** Human-readable daemon address, for messages. */
  readonly endpoint: string;
  /** Resolves when the daemon answers; DockerUnavailableError otherwise (after brief retries). */
  ping(): Promise<void>;
  /** Build an image from a context directory; resolves with the image id, BuildError on a failed build. */
  buildImage(opts: BuildImageOptions): Promise<{ imageId: string }>;
  /**
   * Null when the daemon's disk has at least `minFreeBytes` free (or it cannot be seen from here),
   * else why not, for a tenant's build log (build-disk.ts).
   */
  buildRoom(minFreeBytes: number | null | undefined): Promise<string | null>;
  /** Remove an image by reference; a missing image is not an error. */
  removeImage(ref: string): Promise<void>;
  /** Give the image `source` also the reference `target` (repo:tag); the image is not copied. */
  tagImage(source: string, target: string): Promise<void>;
  /** An image's id, tags and labels, or null when the daemon has no such image. */
  inspectImage(ref: string): Promise<ImageInfo | null>;
  /** Pull an image from its registry (progress lines to `onOutput`); rejects with the daemon's error. */
  pullImage(ref: string, onOutput: (text: string) => void, signal?: AbortSignal): Promise<void>;
  /** Names of the berth networks. */
  readonly networks: BerthNetworks;
  /**
   * Create the berth networks when missing (bridge, inter-container traffic disabled), once per
   * process; a network of that name with other settings is an error. Retried after a failure.
   */
  ensureNetworks(): Promise<void>;
}

/**
 * How to reach the daemon: a unix socket, or TCP. Over TCP with DOCKER_TLS_VERIFY or
 * DOCKER_CERT_PATH set (or an https:// address) it is TLS with the client certificate of
 * DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem; default ~/.docker), much as the docker CLI does. Plain
 * TCP is refused off loopback: anything that reaches that port — the apps themselves, through
 * their bridge's gateway — could create a privileged container and own the host and every tenant
 * (BERTH_DOCKER_INSECURE_TCP=1 for a daemon the operator has firewalled).
 */
export function dockerOptions(dockerHost: string | undefined, env: NodeJS.ProcessEnv = process.env): { opts: Docker.DockerOptions; endpoint: string } {
  const h = dockerHost ?? env.DOCKER_HOST;
  if (!h) return { opts: pinned({ socketPath: '/var/run/docker.sock' }), endpoint: 'unix:///var/run/docker.sock' };
  if (h.startsWith('unix://')) return { opts: pinned({ socketPath: h.slice('unix://'.length) }), endpoint: h };
  if (h.startsWith('/')) return { opts: pinned({ socketPath: h }), endpoint: `unix://${h}` };
  if (h.startsWith('ssh://')) throw new UsageError(`DOCKER_HOST / --docker-host "${h}": ssh is not supported; forward the daemon's unix socket (ssh -L /tmp/docker.sock:/var/run/docker.sock host) and give unix:///tmp/docker.sock`);
  let u: URL;
  try {
    u = new URL(h.replace(/^tcp:/, 'http:'));
  } catch {
    throw new UsageError(`DOCKER_HOST / --docker-host "${h}" is not unix:///path, tcp://host:port or https://host:port`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`DOCKER_HOST / --docker-host "${h}": use unix:///path, tcp://host:port or https://host:port`);
  const tls = u.protocol === 'https:' || (env.DOCKER_TLS_VERIFY !== undefined && env.DOCKER_TLS_VERIFY !== '') || !!env.DOCKER_CERT_PATH;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  // (the port as written: URL drops one that is its scheme's default, https://h:443 or tcp://h:80)
  const written = /:(\d{1,5})\/?$/.exec(h.replace(/^[a-z]+:\/\//, '').replace(/^\[[^\]]*\]/, ''));
  const port = written ? Number(written[1]) : undefined;
  if (!tls) {
    if (!isLoopbackName(host) && env.BERTH_DOCKER_INSECURE_TCP !== '1') {
      throw new UsageError(`DOCKER_HOST / --docker-host "${h}" is plain TCP to another machine: whatever reaches that port (the apps too, through their bridge) could run a privileged container and own the host. Use TLS (DOCKER_TLS_VERIFY=1, DOCKER_CERT_PATH with ca.pem, cert.pem, key.pem), a unix socket (an ssh tunnel), or set BERTH_DOCKER_INSECURE_TCP=1 for a daemon you have firewalled`);
    }
    return { opts: pinned({ host, port: port ?? 2375, protocol: 'http' }), endpoint: h };
  }
  const dir = env.DOCKER_CERT_PATH || join(env.HOME ?? homedir(), '.docker');
  const read = (f: string) => {
    try {
      return readFileSync(join(dir, f));
    } catch (e) {
      throw new UsageError(`Docker over TLS needs ${join(dir, f)} (DOCKER_CERT_PATH): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  return { opts: pinned({ host, port: port ?? 2376, protocol: 'https', ca: read('ca.pem'), cert: read('cert.pem'), key: read('key.pem') }), endpoint: h };
}

/**
 * Every connection setting given, none left unset: docker-modem lays what it is given over what
 * it reads from the environment itself (DOCKER_HOST, DOCKER_CERT_PATH), so `--docker-host
 * unix:///…` with DOCKER_HOST=tcp://… in the environment went to the TCP daemon.
 */
function pinned(o: Docker.DockerOptions): Docker.DockerOptions {
  return { socketPath: undefined, host: undefined, port: undefined, protocol: undefined, ca: undefined, cert: undefined, key: undefined, ...o };
}

export function createRuntime(opts: { dockerHost?: string; log: Logger; pingTimeoutMs?: number; networks?: BerthNetworks; buildTimeoutMs?: number; egress?: EgressGuard }): Runtime {
  const networks = opts.networks ?? { app: 'berth-apps', build: 'berth-builds' };
  const { opts: dopts, endpoint } = dockerOptions(opts.dockerHost);
  const docker = new Docker(dopts);
  const log = opts.log.child({ component: 'runtime' });
  const pingTimeoutMs = opts.pingTimeoutMs ?? 5000;

  const retrying = <T>(what: string, fn: () => Promise<T>, signal?: AbortSignal) =>
    withRetry(fn, {
      attempts: 4,
      baseMs: 250,
      isTransient: isTransientDockerError,
      signal,
      onRetry: (e, attempt, delay) => log.warn({ err: (e as Error).message, attempt, delayMs: Math.round(delay) }, `docker ${what} failed; retrying`),
    });

  async function ping(): Promise<void> {
    try {
      await retrying('ping', async () => {
        const ac = new AbortController();
        const t = setTimeout(() => ac.abort(), pingTimeoutMs);
        try { await (docker.ping as (o: object) => Promise<unknown>)({ abortSignal: ac.signal }); } finally { clearTimeout(t); }
      });
    } catch (e) {
      const err = e as Error & { code?: string };
      const why = err.name === 'AbortError' ? `no answer within ${pingTimeoutMs}ms` : err.message;
      throw new DockerUnavailableError(`Docker daemon unreachable at ${endpoint}: ${why}`);
    }
  }

  let networksReady: Promise<void> | undefined;
  function ensureNetworks(): Promise<void> {
    networksReady ??= (async () => {
      await ping();
      const bridges: string[] = [];
      for (const name of new Set([networks.app, networks.build])) bridges.push(await ensureNetwork(name));
      await opts.egress?.apply(bridges);
    })().catch((e) => { networksReady = undefined; throw e; });
    // (asked each time: a required egress guard lost after the networks were set up holds work too)
    return networksReady.then(() => opts.egress?.assertInPlace());
  }

  /** The network's bridge interface once it is there as it should be. */
  async function ensureNetwork(name: string): Promise<string> {
    const check = (info: Docker.NetworkInspectInfo) => {
      if (info.Driver !== 'bridge' || info.Options?.[ICC_OPTION] !== 'false') {
        throw new Error(`Docker network "${name}" exists but is not a bridge network with ${ICC_OPTION}=false; remove it (docker network rm ${name}) or configure another name`);
      }
      // the egress guard and Docker's isolation rules berth relies on are IPv4 ones
      if (info.EnableIPv6) throw new Error(`Docker network "${name}" has IPv6 enabled, which berth's network isolation does not cover; remove it (docker network rm ${name}) or configure another name`);
      return info.Options[BRIDGE_NAME_OPTION] ?? `br-${info.Id.slice(0, 12)}`;
    };
    const inspect = () => retrying('inspect network', () => docker.getNetwork(name).inspect() as Promise<Docker.NetworkInspectInfo>);
    try {
      return check(await inspect());
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode !== 404) throw e;
    }
    try {
      await retrying('create network', () => docker.createNetwork({
        Name: name, Driver: 'bridge', CheckDuplicate: true, EnableIPv6: false, Options: { [ICC_OPTION]: 'false' }, Labels: { 'berth.managed': 'true' },
      }));
      log.info({ network: name }, 'created Docker network (inter-container traffic disabled)');
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode !== 409) throw e; // created concurrently by another control plane
    }
    return check(await inspect());
  }

  async function inspectImage(ref: string): Promise<ImageInfo | null> {
    try {
      const info = await retrying('inspect image', () => docker.getImage(ref).inspect());
      return { id: info.Id, repoTags: info.RepoTags ?? [], labels: info.Config?.Labels ?? {}, onBuild: info.Config?.OnBuild ?? [] };
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404) return null;
      if (isTransientDockerError(e)) throw new DockerUnavailableError(`Docker daemon unreachable at ${endpoint}: ${(e as Error).message}`);
      throw e;
    }
  }

  async function pullImage(ref: string, onOutput: (text: string) => void, signal?: AbortSignal): Promise<void> {
    const stream = (await retrying('pull', () => docker.pull(ref, { abortSignal: signal } as object), signal)) as Readable;
    // the daemon reports most failures (unknown manifest, rate limits) inside a 200 answer
    let failure: string | undefined;
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : failure !== undefined ? reject(new Error(failure)) : resolve()), (e: { status?: string; id?: string; error?: string; errorDetail?: { message?: string }; progress?: string }) => {
        // layer progress bars are noise in a build log: statuses only, once per layer and state
        if (e.error || e.errorDetail) {
          failure ??= e.errorDetail?.message ?? e.error ?? 'pull failed';
          onOutput(`ERROR: ${failure}\n`);
        } else if (e.status && !e.progress) onOutput(`${e.id ? e.id + ': ' : ''}${e.status}\n`);
      });
    });
  }

  /**
   * What this host offers to bound builds, found once per process: cgroups of their own
   * (build-cgroup.ts) and the daemon's data directory for the free-disk floor (build-disk.ts),
   * each null where it cannot be had (said once in the log).
   */
  let host: Promise<{ cgroups: BuildCgroups | null; rootDir: string | null }> | undefined;
  function buildHost(): Promise<{ cgroups: BuildCgroups | null; rootDir: string | null }> {
    host ??= (async () => {
      const info = (await retrying('info', () => (docker.info as (o: object) => Promise<unknown>)({ abortSignal: AbortSignal.timeout(10_000) }))) as { CgroupDriver?: string; CgroupVersion?: string; DockerRootDir?: string };
      const local = endpoint.startsWith('unix://');
      const cg = await buildCgroups(info, local, undefined, Math.max(3600_000, (opts.buildTimeoutMs ?? 0) + 600_000));
      if (typeof cg === 'string') log.warn({ reason: cg }, 'builds are not bounded in processes (BERTH_BUILD_PIDS) nor measured step by step (BERTH_BUILD_DISK) here: ' + cg);
      let rootDir = local && info.DockerRootDir ? info.DockerRootDir : null;
      if (rootDir !== null && !(await statfs(rootDir).then(() => true, () => false))) rootDir = null;
      if (rootDir === null) log.warn({ dockerRootDir: info.DockerRootDir }, 'the Docker daemon\'s data directory is not visible here: builds do not stop when its disk runs low (BERTH_BUILD_MIN_FREE)');
      return { cgroups: typeof cg === 'string' ? null : cg, rootDir };
    })().catch((e) => { host = undefined; throw e; });
    return host;
  }

  const lowDisk = (freeBytes: number, floorBytes: number) =>
    log.warn({ freeBytes, floorBytes }, 'the Docker daemon\'s disk is below BERTH_BUILD_MIN_FREE: builds are stopped until there is room');

  /** Null when the daemon's disk has at least `minFreeBytes` free (or cannot be seen here); else why not, for the tenant. */
  async function buildRoom(minFreeBytes: number | null | undefined): Promise<string | null> {
    if (!minFreeBytes) return null;
    const here = await buildHost().catch(() => null);
    if (!here?.rootDir) return null;
    const free = await freeBelow(here.rootDir, minFreeBytes);
    if (free === null) return null;
    lowDisk(free, minFreeBytes);
    return SHORT_OF_DISK;
  }

  async function buildImage(b: BuildImageOptions): Promise<{ imageId: string }> {
    await ping();
    await ensureNetworks();
    let pack: tarStream.Pack | undefined;
    // what goes wrong here is the operator's to see: the tenant is told the build could not be set up
    const setUp = (what: string) => (e: unknown): never => {
      log.error({ err: (e as Error).message }, `build set-up failed: ${what}`);
      throw new BuildError('the build could not be set up on this host (an operator can see why in the control plane\'s log); try again later');
    };
    const here = b.pids || b.diskBytes || b.minFreeBytes ? await buildHost().catch(setUp('asking the Docker daemon about its cgroups and disk')) : null;
    // the build's own cgroup: its processes counted, its containers known (pids.max "max" when only the disk is bounded)
    const group = here?.cgroups && (b.pids || b.diskBytes) ? await here.cgroups.create(b.pids ?? null).catch(setUp('making the build\'s cgroup')) : null;
    // the caller's abort, or the disk watch's
    const own = new AbortController();
    const signal = b.signal ? AbortSignal.any([b.signal, own.signal]) : own.signal;
    let over: string | undefined;
    const floor = b.minFreeBytes && here?.rootDir ? { path: here.rootDir, bytes: b.minFreeBytes } : null;
    const disk = b.diskBytes || floor !== null ? new BuildDiskWatch(docker, {
      limitBytes: b.diskBytes ?? null,
      containers: group === null ? null : () => group.containers(),
      floor,
      onOver: (why) => { over = why; own.abort(why); },
      onLowDisk: lowDisk,
    }) : null;
    try {
      // a host already short of disk does not start one
      await disk?.poll();
      if (over !== undefined) throw new BuildError(over);
      return await build(b, { cgroupParent: group?.parent, signal, disk, over: () => over }, () => { pack?.destroy(); return (pack = packDirectory(b.contextDir)); }); // a retry packs afresh
    } finally {
      disk?.stop();
      // an aborted or failed build leaves the context stream half read: stop it, close its file
      if (pack && !pack.destroyed) pack.destroy();
      await group?.release();
    }
  }

  interface Watched {
    cgroupParent: string | undefined;
    signal: AbortSignal;
    disk: BuildDiskWatch | null;
    over: () => string | undefined;
  }

  /**
   * The daemon refusing the build outright (a Dockerfile it cannot parse: 400) says why in its own
   * words, without dockerode's "(HTTP code 400) unexpected - " in front.
   */
  function refusedBuild(e: unknown): unknown {
    const err = e as { statusCode?: unknown; json?: { message?: unknown } | null; message?: unknown };
    if (typeof err.statusCode !== 'number' || err.statusCode < 400 || err.statusCode >= 500) return e;
    // (docker-modem has the body in `json` when it parsed, else in its message after the status)
    const said = typeof err.json?.message === 'string' ? err.json.message : String(err.message ?? '').replace(/^\(HTTP code \d+\) [^-]*- /, '');
    return said.trim() === '' ? e : new BuildError(said.trim());
  }

  async function build(b: BuildImageOptions, w: Watched, context: () => tarStream.Pack): Promise<{ imageId: string }> {
    const { signal, disk } = w;
    const began = Date.now();
    const stream = (await retrying('build', () =>
      docker.buildImage(context() as unknown as NodeJS.ReadableStream, {
        t: b.tag,
        labels: b.labels,
        rm: true,
        forcerm: true,
        pull: false,
        // no layer cache across builds: the daemon's cache is shared by all tenants, and "Using
        // cache" in a build's log would tell one tenant that another built the same steps (a COPY
        // is keyed by the files' content: a guess at another tenant's file could be confirmed).
        // Every step then runs, and the disk watch sees everything a build writes.
        nocache: true,
        // RUN steps on a berth network: no traffic to app containers (another bridge) or to other builds (icc off)
        networkmode: networks.build,
        // a RUN step is the tenant's code on the host: bounded memory (no swap beyond it) and CPU
        ...(b.memoryBytes ? { memory: b.memoryBytes, memswap: b.memoryBytes } : {}),
        ...(b.cpus ? { cpuperiod: 100_000, cpuquota: Math.round(b.cpus * 100_000) } : {}),
        // and bounded processes: every step's container goes under a cgroup with pids.max
        ...(w.cgroupParent ? { cgroupparent: w.cgroupParent } : {}),
        abortSignal: signal,
      } as Docker.ImageBuildOptions), signal).catch((e: unknown) => { throw refusedBuild(e); })) as Readable;
    disk?.start();
    // the images its steps committed are removed when they lead to no tagged image: all of a
    // failed build's, and a successful multi-stage build's earlier stages (build-leftovers.ts)
    const steps = new StepImages();
    const trace = () => ({ printed: steps.ids, containers: disk?.containers ?? [], since: began });
    let built: { imageId: string };
    try {
      built = await follow(b, w, stream, steps);
    } catch (e) {
      const removed = await removeLeftovers(docker, trace());
      if (removed > 0) log.debug({ tag: b.tag, removed }, 'removed the images a failed build committed');
      throw e;
    }
    // (the final image's own steps are its parents: not leaves, never removed)
    const removed = await removeLeftovers(docker, trace(), 0);
    if (removed > 0) log.debug({ tag: b.tag, removed }, 'removed the images of earlier build stages');
    return built;
  }

  /** Read a build's output to its end: the image id, or a BuildError. */
  async function follow(b: BuildImageOptions, w: Watched, stream: Readable, steps: StepImages): Promise<{ imageId: string }> {
    const { signal, disk } = w;
    let imageId: string | undefined;
    let failure: string | undefined;
    let buf = '';
    const handleLine = (line: string) => {
      if (!line.trim()) return;
      let msg: { stream?: string; status?: string; progress?: string; error?: string; errorDetail?: { message?: string }; aux?: { ID?: string } };
      try { msg = JSON.parse(line); } catch { b.onOutput(line + '\n'); return; }
      if (msg.stream) {
        steps.see(msg.stream);
        b.onOutput(msg.stream);
      }
      else if (msg.status) b.onOutput(`${msg.status}${msg.progress ? ' ' + msg.progress : ''}\n`);
      if (msg.aux?.ID) imageId = msg.aux.ID;
      if (msg.error || msg.errorDetail) {
        failure = msg.errorDetail?.message ?? msg.error ?? 'build failed';
        b.onOutput(`ERROR: ${failure}\n`);
      }
    };
    await new Promise<void>((resolve, reject) => {
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) !== -1) { handleLine(buf.slice(0, i)); buf = buf.slice(i + 1); }
      });
      stream.on('end', () => { handleLine(buf); resolve(); });
      stream.on('error', reject);
      stream.on('close', () => { if (!stream.readableEnded) reject(signal.aborted ? new BuildError('build aborted') : new BuildError('connection to the Docker daemon closed during the build')); });
    }).catch((e: Error) => {
      const why = w.over();
      if (why !== undefined) throw new BuildError(why);
      if (b.signal?.aborted) throw new BuildError(typeof b.signal.reason === 'string' ? b.signal.reason : 'build aborted');
      throw e instanceof BuildError ? e : new BuildError(`build stream failed: ${e.message}`);
    });
    // no look after the end: what the last one found decides
    disk?.stop();
    const late = w.over();
    if (failure) throw new BuildError(late ?? failure);
    if (!imageId || late !== undefined || b.diskBytes) {
      const info = await retrying('inspect', () => docker.getImage(b.tag).inspect());
      imageId = info.Id;
      // past a bound at the very end, or a last step quicker than the watch's look: the finished image is measured too
      const tooBig = b.diskBytes && info.Size > b.diskBytes ? disk!.overMessage(info.Size, 'the image, base included, has') : undefined;
      if (late !== undefined || tooBig !== undefined) {
        await removeImage(b.tag).catch(() => {});
        throw new BuildError((late ?? tooBig)!);
      }
    }
    return { imageId };
  }

  async function removeImage(ref: string): Promise<void> {
    try {
      await retrying('remove image', () => docker.getImage(ref).remove({ force: true }));
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404) return;
      throw e;
    }
  }

  async function tagImage(source: string, target: string): Promise<void> {
    const colon = target.lastIndexOf(':');
    try {
      await retrying('tag image', () => docker.getImage(source).tag({ repo: target.slice(0, colon), tag: target.slice(colon + 1) }));
    } catch (e) {
      if (isTransientDockerError(e)) throw new DockerUnavailableError(`Docker daemon unreachable at ${endpoint}: ${(e as Error).message}`);
      throw e;
    }
  }

  return { docker, endpoint, ping, buildImage, buildRoom, removeImage, tagImage, inspectImage, pullImage, networks, ensureNetworks };
}

/**
 * A tar stream of a directory (files, directories, symlinks as links), read lazily. Destroying
 * the stream (an aborted build) stops the walk and closes the file being read.
 */
export function packDirectory(root: string): tarStream.Pack {
  const pack = tarStream.pack();
  const walk = async (rel: string): Promise<void> => {
    const dir = join(root, rel);
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      if (pack.destroyed) return;
      const r = rel ? `${rel}/${name}` : name;
      const abs = join(root, r);
      const st = await lstat(abs);
      if (pack.destroyed) return;
      // Contexts are stored readable by berth only (0700 / 0600 / 0700 with the executable bit):
      // the image gets the usual modes, 0755 for directories and executables, 0644 for other files.
      const mode = st.isDirectory() || (st.isFile() && st.mode & 0o100) ? 0o755 : st.isSymbolicLink() ? 0o777 : 0o644;
      const header = { name: r, mode, mtime: st.mtime, uid: 0, gid: 0 };
      if (st.isDirectory()) {
        pack.entry({ ...header, type: 'directory' });
        await walk(r);
      } else if (st.isSymbolicLink()) {
        pack.entry({ ...header, type: 'symlink', linkname: await readlink(abs) });
      } else if (st.isFile()) {
        await new Promise<void>((resolve, reject) => {
          const src = createReadStream(abs);
          // a destroyed pack never calls the entry back: close the file and let the walk end
          const onClose = () => { src.destroy(); resolve(); };
          pack.once('close', onClose);
          const entry = pack.entry({ ...header, type: 'file', size: st.size }, (err) => {
            pack.off('close', onClose);
            if (err) { src.destroy(); reject(err); } else resolve();
          });
          src.on('error', (e) => { pack.off('close', onClose); reject(e); }).pipe(entry);
        });
      }
    }
  };
  walk('').then(() => { if (!pack.destroyed) pack.finalize(); }, (e) => { if (!pack.destroyed) pack.destroy(e as Error); });
  return pack;
}
