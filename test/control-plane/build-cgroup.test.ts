import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILD_CGROUP_BASE, buildCgroups, parseCgroupMounts } from '../../control-plane/runtime/build-cgroup.js';
import { tempDir } from '../helpers/tmp.js';

// The cgroup filesystem's rules (rmdir of a busy group fails) are the kernel's; here a plain
// directory stands in for the hierarchies so that what berth writes, and where, is checked
// everywhere. The real thing is in build.test.ts (a fork past the limit fails in a real build).
describe('build cgroups (pids.max per build)', () => {
  let t: { dir: string; cleanup(): Promise<void> };
  beforeAll(async () => { t = await tempDir(); });
  afterAll(async () => { await t.cleanup(); });

  it('reads cgroup mounts, v1 and v2, with escaped paths and the part of the tree mounted', () => {
    const m = parseCgroupMounts([
      '22 1 0:21 / /proc rw,nosuid - proc proc rw',
      '36 30 0:33 / /sys/fs/cgroup/pids rw,relatime shared:15 - cgroup cgroup rw,pids',
      '32 30 0:29 / /sys/fs/cgroup/cpu\\054cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
      '40 30 0:35 /docker/abc /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n'));
    expect(m).toEqual([
      { path: '/sys/fs/cgroup/pids', type: 'cgroup', options: ['rw', 'pids'], root: '/' },
      { path: '/sys/fs/cgroup/cpu,cpuacct', type: 'cgroup', options: ['rw', 'cpu', 'cpuacct'], root: '/' },
      { path: '/sys/fs/cgroup/unified', type: 'cgroup2', options: ['rw'], root: '/docker/abc' },
    ]);
  });

  it('this very process: its pids hierarchy (v1) or cgroup2 mount is found', () => {
    const m = parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8'));
    expect(m.some((x) => (x.type === 'cgroup' && x.options.includes('pids')) || x.type === 'cgroup2')).toBe(true);
  });

  it('says why there can be none: remote daemon, systemd driver, no pids hierarchy', async () => {
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, false, '')).toMatch(/not on this host/);
    expect(await buildCgroups({ CgroupDriver: 'systemd', CgroupVersion: '2' }, true, '')).toMatch(/"systemd" cgroup driver/);
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, true, `1 1 0:1 / ${t.dir}/x rw - cgroup cgroup rw,memory`)).toMatch(/no cgroup v1 pids/);
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '2' }, true, `1 1 0:1 / ${t.dir}/x rw - cgroup cgroup rw,pids`)).toMatch(/no cgroup2 mount/);
    // inside a container's cgroup namespace: limits written here would never reach the daemon's cgroups
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, true, `1 1 0:1 /docker/abc ${t.dir}/x rw - cgroup cgroup rw,pids`)).toMatch(/sees only \/docker\/abc of the cgroup tree/);
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '2' }, true, `1 1 0:1 /kubepods ${t.dir}/y rw - cgroup2 cgroup2 rw`)).toMatch(/sees only \/kubepods/);
  });

  it('v1: one cgroup per build under berth-builds with pids.max, removed in every hierarchy after', async () => {
    const pids = join(t.dir, 'v1', 'pids');
    const mem = join(t.dir, 'v1', 'memory');
    const unified = join(t.dir, 'v1', 'unified');
    for (const d of [pids, mem, unified]) await mkdir(d, { recursive: true });
    const cg = await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, true,
      `1 1 0:1 / ${pids} rw - cgroup cgroup rw,pids\n1 1 0:2 / ${mem} rw - cgroup cgroup rw,memory\n1 1 0:3 / ${unified} rw - cgroup2 cgroup2 rw\n`);
    if (typeof cg === 'string') throw new Error(cg);
    const a = await cg.create(64);
    const b = await cg.create(100);
    expect(a.parent).toMatch(new RegExp(`^/${BUILD_CGROUP_BASE}/b-[a-z0-9]+-[0-9a-f]{12}$`));
    expect(b.parent).not.toBe(a.parent);
    expect(readFileSync(join(pids, a.parent, 'pids.max'), 'utf8')).toBe('64');
    expect(readFileSync(join(pids, b.parent, 'pids.max'), 'utf8')).toBe('100');
    // the daemon makes the same path in the other hierarchies; release removes them all
    await mkdir(join(mem, a.parent), { recursive: true });
    await mkdir(join(unified, a.parent), { recursive: true });
    // (a plain directory with a file is "busy" like a cgroup with members: only the file goes first)
    await import('node:fs/promises').then((f) => f.rm(join(pids, a.parent, 'pids.max')));
    await a.release();
    expect(existsSync(join(pids, a.parent))).toBe(false);
    expect(existsSync(join(mem, a.parent))).toBe(false);
    expect(existsSync(join(unified, a.parent))).toBe(false);
    expect(existsSync(join(pids, b.parent))).toBe(true);
  });

  it('v2: the pids controller is handed down to berth-builds; refused when the root does not have it', async () => {
    const root = join(t.dir, 'v2');
    await mkdir(join(root, BUILD_CGROUP_BASE), { recursive: true });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(root, BUILD_CGROUP_BASE, 'cgroup.controllers'), 'cpu memory\n');
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '2' }, true, `1 1 0:1 / ${root} rw - cgroup2 cgroup2 rw`)).toMatch(/pids controller is not available in .*berth-builds \(the root cgroup does not hand it down\)/);
    await writeFile(join(root, BUILD_CGROUP_BASE, 'cgroup.controllers'), 'cpu memory pids\n');
    const cg = await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '2' }, true, `1 1 0:1 / ${root} rw - cgroup2 cgroup2 rw`);
    if (typeof cg === 'string') throw new Error(cg);
    // on a real cgroupfs each write adds one controller; a plain file keeps the last
    expect(readFileSync(join(root, BUILD_CGROUP_BASE, 'cgroup.subtree_control'), 'utf8')).toBe('+pids');
    const a = await cg.create(32);
    expect(readFileSync(join(root, a.parent, 'pids.max'), 'utf8')).toBe('32');
  });
});
