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
import { mkdir, readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The cgroup (relative to each hierarchy's root) under which every build's cgroup is made. */
export const BUILD_CGROUP_BASE = 'berth-builds';

export interface BuildCgroup {
  /** what the daemon takes as `cgroupparent` */
  readonly parent: string;
  /** Remove the cgroup (once the build's containers are gone); never throws. */
  release(): Promise<void>;
}

export interface BuildCgroups {
  /** A new cgroup holding at most `pids` processes, for one build. */
  create(pids: number): Promise<BuildCgroup>;
}

/** What the daemon says about its cgroups (`docker info`). */
export interface DaemonCgroupInfo {
  CgroupDriver?: string;
  CgroupVersion?: string;
}

interface Mount { path: string; type: string; options: string[] }

/** The cgroup mounts of this process (/proc/self/mounts, octal escapes decoded). */
export function parseCgroupMounts(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 4 || (f[2] !== 'cgroup' && f[2] !== 'cgroup2')) continue;
    out.push({ path: f[1].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), type: f[2], options: f[3].split(',') });
  }
  return out;
}

/**
 * Build cgroups for this daemon, or the reason there can be none here (a string). `mountsText`
 * is /proc/self/mounts (a parameter for tests).
 */
export async function buildCgroups(info: DaemonCgroupInfo, localDaemon: boolean, mountsText?: string): Promise<BuildCgroups | string> {
  if (!localDaemon) return 'the Docker daemon is not on this host (DOCKER_HOST is not a unix socket)';
  if (info.CgroupDriver !== 'cgroupfs') return `the Docker daemon uses the "${info.CgroupDriver ?? 'unknown'}" cgroup driver (cgroupfs is needed)`;
  let mounts: Mount[];
  try {
    mounts = parseCgroupMounts(mountsText ?? await readFile('/proc/self/mounts', 'utf8'));
  } catch (e) {
    return `cannot read the cgroup mounts (${(e as Error).message})`;
  }
  let cg: BuildCgroups | string;
  if (info.CgroupVersion === '2') {
    const root = mounts.find((m) => m.type === 'cgroup2');
    cg = root === undefined ? 'no cgroup2 mount here' : await v2(root.path);
  } else {
    const v1 = mounts.filter((m) => m.type === 'cgroup');
    const pids = v1.find((m) => m.options.includes('pids'));
    // the daemon makes the build's path in every hierarchy, the hybrid mode's cgroup2 one included
    cg = pids === undefined ? 'no cgroup v1 pids hierarchy here' : await v1Cgroups(pids.path, mounts.map((m) => m.path));
  }
  return cg;
}

/** A cgroup name nobody else picks: one per build. */
const newName = () => `b-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;

/**
 * Leftovers (a control plane that stopped before its retries) older than this are removed at
 * startup. Not sooner: between two steps a running build's cgroup is empty too, and another
 * control plane on this host may be running it (a build lasts ≤ 30 min by default).
 */
const STALE_MS = 3600_000;

/** Remove empty build cgroups older than STALE_MS under `base` (a non-empty one refuses rmdir). */
async function sweep(base: string): Promise<void> {
  let names: string[];
  try { names = await readdir(base); } catch { return; }
  const now = Date.now();
  for (const n of names) {
    if (!n.startsWith('b-')) continue;
    const p = join(base, n);
    try {
      if (now - (await stat(p)).mtimeMs > STALE_MS) await rmdir(p);
    } catch { /* in use, or gone */ }
  }
}

/** When a busy cgroup is tried again: the daemon removes an aborted step's container after the build's answer ends. */
const RETRY_MS = [1000, 5000, 30_000];

/**
 * Remove cgroup directories; one still busy (its last container not yet removed by the daemon)
 * is tried again a few times over half a minute. What is left then goes at the next startup.
 */
async function removeLater(dirs: string[], attempt = 0): Promise<void> {
  const busy: string[] = [];
  for (const d of dirs) {
    await rmdir(d).catch((e: NodeJS.ErrnoException) => { if (e.code === 'EBUSY') busy.push(d); });
  }
  if (busy.length > 0 && attempt < RETRY_MS.length) {
    setTimeout(() => { void removeLater(busy, attempt + 1); }, RETRY_MS[attempt]).unref();
  }
}

async function v1Cgroups(pidsRoot: string, allRoots: string[]): Promise<BuildCgroups | string> {
  const base = join(pidsRoot, BUILD_CGROUP_BASE);
  try {
    await mkdir(base, { recursive: true });
  } catch (e) {
    return `cannot create ${base} (${(e as Error).message})`;
  }
  for (const r of allRoots) await sweep(join(r, BUILD_CGROUP_BASE));
  return {
    async create(pids) {
      const name = newName();
      const dir = join(base, name);
      await mkdir(dir);
      await writeFile(join(dir, 'pids.max'), String(pids));
      return {
        parent: `/${BUILD_CGROUP_BASE}/${name}`,
        // the daemon made the same path in every hierarchy (memory, cpu, …) for the containers
        release: () => removeLater(allRoots.map((r) => join(r, BUILD_CGROUP_BASE, name))),
      };
    },
  };
}

async function v2(root: string): Promise<BuildCgroups | string> {
  const base = join(root, BUILD_CGROUP_BASE);
  try {
    await mkdir(base, { recursive: true });
    // children of `base` get the controllers the root hands down; pids is the one that matters here
    const available = (await readFile(join(base, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/);
    if (!available.includes('pids')) return `the pids controller is not enabled for ${base}`;
    for (const c of available) await writeFile(join(base, 'cgroup.subtree_control'), `+${c}`).catch(() => {});
  } catch (e) {
    return `cannot set up ${base} (${(e as Error).message})`;
  }
  await sweep(base);
  return {
    async create(pids) {
      const name = newName();
      const dir = join(base, name);
      await mkdir(dir);
      await writeFile(join(dir, 'pids.max'), String(pids));
      return { parent: `/${BUILD_CGROUP_BASE}/${name}`, release: () => removeLater([dir]) };
    },
  };
}
