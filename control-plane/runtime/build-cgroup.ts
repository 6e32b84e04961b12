/**
 * A ceiling on the processes one build may start.
 *
 * A build's RUN steps are the tenant's code on the host, and the daemon's build API bounds their
 * memory and CPU but has no pids limit: `RUN :(){ :|:& };:` would fill the host's process table,
 * and memory does not stop it soon enough (a sleeping shell costs a few hundred KiB). What the
 * build API does take is `cgroupparent`. So before each build berth makes a cgroup of its own,
 * `/berth-builds/<name>`, sets its `pids.max`, and the daemon puts every step's container under
 * it: the kernel counts all processes of all steps of that build together (a step past it gets
 * EAGAIN from fork, `can't fork: Resource temporarily unavailable`). The cgroup is removed after
 * the build.
 *
 * Possible where berth can write the daemon's cgroups: a local daemon (unix socket) with the
 * `cgroupfs` driver, cgroup v1 or v2, berth running as root on the same host. Elsewhere (the
 * `systemd` driver, a remote or rootless daemon) builds are not bounded this way; the control
 * plane says why once in its log (docs/security.md).
 *
 * Written by hand: a handful of mkdir/write/rmdir calls on cgroupfs; no library does this.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The cgroup (relative to each hierarchy's root) under which every build's cgroup is made. */
export const BUILD_CGROUP_BASE = 'berth-builds';

export interface BuildCgroup {
  /** what the daemon takes as `cgroupparent` */
  readonly parent: string;
  /**
   * The ids of the containers in it now: the build's running step. Read from the cgroup
   * filesystem, which only the daemon writes (unlike the build's output, which the tenant's
   * steps print to): build-disk.ts measures what these write.
   */
  containers(): Promise<string[]>;
  /** Remove the cgroup (once the build's containers are gone); never throws. */
  release(): Promise<void>;
}

export interface BuildCgroups {
  /** A new cgroup holding at most `pids` processes (null: no limit), for one build. */
  create(pids: number | null): Promise<BuildCgroup>;
}

/** What the daemon says about its cgroups (`docker info`). */
export interface DaemonCgroupInfo {
  CgroupDriver?: string;
  CgroupVersion?: string;
}

interface Mount { path: string; type: string; options: string[]; root: string }

const unescape = (p: string) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/**
 * The cgroup mounts of this process from /proc/self/mountinfo (octal escapes decoded): where,
 * which kind, the controllers (v1), and which part of the hierarchy is mounted there (`root`:
 * `/` unless this process is in a cgroup namespace or the mount is a bind of a sub-tree).
 */
export function parseCgroupMounts(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const f = line.slice(0, sep).split(' ');
    const g = line.slice(sep + 3).split(' ');
    if (f.length < 5 || g.length < 3 || (g[0] !== 'cgroup' && g[0] !== 'cgroup2')) continue;
    out.push({ path: unescape(f[4]), type: g[0], options: g[2].split(','), root: unescape(f[3]) });
  }
  return out;
}

/**
 * Build cgroups for this daemon, or the reason there can be none here (a string). `mountsText`
 * is /proc/self/mountinfo (a parameter for tests); leftovers older than `staleMs` are removed.
 */
export async function buildCgroups(info: DaemonCgroupInfo, localDaemon: boolean, mountsText?: string, staleMs = 3600_000): Promise<BuildCgroups | string> {
  if (!localDaemon) return 'the Docker daemon is not on this host (DOCKER_HOST is not a unix socket)';
  if (info.CgroupDriver !== 'cgroupfs') return `the Docker daemon uses the "${info.CgroupDriver ?? 'unknown'}" cgroup driver (cgroupfs is needed)`;
  let mounts: Mount[];
  try {
    mounts = parseCgroupMounts(mountsText ?? await readFile('/proc/self/mountinfo', 'utf8'));
  } catch (e) {
    return `cannot read the cgroup mounts (${(e as Error).message})`;
  }
  // a part of the tree (a cgroup namespace, a bind mount): the daemon's /berth-builds is elsewhere
  const partial = (m: Mount) => `this process sees only ${m.root} of the cgroup tree at ${m.path} (a container's cgroup namespace?): the daemon's cgroups are not visible here`;
  if (info.CgroupVersion === '2') {
    const root = mounts.find((m) => m.type === 'cgroup2');
    if (root === undefined) return 'no cgroup2 mount here';
    return root.root !== '/' ? partial(root) : v2(root.path, staleMs);
  }
  const pids = mounts.find((m) => m.type === 'cgroup' && m.options.includes('pids'));
  if (pids !== undefined && pids.root !== '/') return partial(pids);
  // the daemon makes the build's path in every hierarchy, the hybrid mode's cgroup2 one included
  return pids === undefined ? 'no cgroup v1 pids hierarchy here' : v1(pids.path, mounts.map((m) => m.path), staleMs);
}

/** A cgroup name nobody else picks, one per build; it carries its creation time (sweep()). */
const newName = () => `b-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
const NAME = /^b-([0-9a-z]{1,11})-[0-9a-f]{12}$/;
const CONTAINER_ID = /^[0-9a-f]{64}$/;

/**
 * Remove the empty build cgroups under `base` made more than `staleMs` ago (a control plane that
 * stopped before its retries). Not sooner: between two steps a running build's cgroup is empty
 * too, and another control plane on this host may be running it. The age is the one in the name
 * (a cgroup directory's mtime is not kept); a non-empty cgroup refuses rmdir anyway.
 */
async function sweep(base: string, staleMs: number): Promise<void> {
  let names: string[];
  try { names = await readdir(base); } catch { return; }
  const now = Date.now();
  for (const n of names) {
    const m = NAME.exec(n);
    if (m === null || now - parseInt(m[1], 36) <= staleMs) continue;
    await rmdir(join(base, n)).catch(() => {});
  }
}

/** Sweep again now and then (from create(): a long-running control plane's leftovers go too). */
function sweeper(sweepNow: () => Promise<void>): () => void {
  let last = Date.now();
  return () => {
    if (Date.now() - last < 600_000) return;
    last = Date.now();
    void sweepNow().catch(() => {});
  };
}

/**
 * When a build's cgroup is removed (again): the daemon removes an aborted step's container after
 * the build's answer has ended, and a step it started just before noticing the abort would make
 * the path anew (without pids.max) — each later attempt removes what reappeared.
 */
const RETRY_MS = [250, 1000, 5000, 30_000];

/** Remove cgroup directories now and a few times over the next half minute; never throws. */
async function removeLater(dirs: string[], attempt = 0): Promise<void> {
  for (const d of dirs) await rmdir(d).catch(() => {});
  if (attempt < RETRY_MS.length) {
    setTimeout(() => { void removeLater(dirs, attempt + 1); }, RETRY_MS[attempt]).unref();
  }
}

/** Make `dir` with pids.max; nothing is left behind when that fails. */
async function makeLimited(dir: string, pids: number | null): Promise<void> {
  await mkdir(dir);
  try {
    await writeFile(join(dir, 'pids.max'), pids === null ? 'max' : String(pids));
  } catch (e) {
    await rmdir(dir).catch(() => {});
    throw new Error(`could not limit the build's processes (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** The container cgroups directly under `dir`. */
async function containersIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory() && CONTAINER_ID.test(e.name)).map((e) => e.name);
  } catch {
    return [];
  }
}

async function v1(pidsRoot: string, allRoots: string[], staleMs: number): Promise<BuildCgroups | string> {
  const base = join(pidsRoot, BUILD_CGROUP_BASE);
  try {
    await mkdir(base, { recursive: true });
  } catch (e) {
    return `cannot create ${base} (${(e as Error).message})`;
  }
  // the daemon makes the same path in every hierarchy (memory, cpu, …) for the containers
  return perBuild(base, async () => { for (const r of allRoots) await sweep(join(r, BUILD_CGROUP_BASE), staleMs); },
    (name) => allRoots.map((r) => join(r, BUILD_CGROUP_BASE, name)));
}

async function v2(root: string, staleMs: number): Promise<BuildCgroups | string> {
  const base = join(root, BUILD_CGROUP_BASE);
  try {
    await mkdir(base, { recursive: true });
    // children of `base` get the controllers the root hands down; pids is the one that matters here
    const available = (await readFile(join(base, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/);
    if (!available.includes('pids')) return `the pids controller is not available in ${base} (the root cgroup does not hand it down)`;
    for (const c of available) await writeFile(join(base, 'cgroup.subtree_control'), `+${c}`).catch(() => {});
    const enabled = (await readFile(join(base, 'cgroup.subtree_control'), 'utf8')).trim().split(/\s+/);
    if (!enabled.includes('pids') && !enabled.includes('+pids')) return `the pids controller could not be enabled below ${base}`;
  } catch (e) {
    return `cannot set up ${base} (${(e as Error).message})`;
  }
  return perBuild(base, () => sweep(base, staleMs), (name) => [join(base, name)]);
}

/**
 * One cgroup per build under `base` (where pids.max is written); `copies(name)`: every directory
 * the daemon makes for one (removed after the build). Leftovers are swept now and every 10 min.
 */
async function perBuild(base: string, sweepNow: () => Promise<void>, copies: (name: string) => string[]): Promise<BuildCgroups> {
  await sweepNow();
  const again = sweeper(sweepNow);
  return {
    async create(pids) {
      again();
      const name = newName();
      const dir = join(base, name);
      await makeLimited(dir, pids);
      return { parent: `/${BUILD_CGROUP_BASE}/${name}`, containers: () => containersIn(dir), release: () => removeLater(copies(name)) };
    },
  };
}
