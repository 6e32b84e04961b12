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

  it('reads cgroup mounts, v1 and v2, with escaped paths', () => {
    const m = parseCgroupMounts([
      'proc /proc proc rw 0 0',
      'cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0',
      'cgroup /sys/fs/cgroup/cpu\\054cpuacct cgroup rw,cpu,cpuacct 0 0',
      'cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0',
    ].join('\n'));
    expect(m).toEqual([
      { path: '/sys/fs/cgroup/pids', type: 'cgroup', options: ['rw', 'relatime', 'pids'] },
      { path: '/sys/fs/cgroup/cpu,cpuacct', type: 'cgroup', options: ['rw', 'cpu', 'cpuacct'] },
      { path: '/sys/fs/cgroup/unified', type: 'cgroup2', options: ['rw'] },
    ]);
  });

  it('says why there can be none: remote daemon, systemd driver, no pids hierarchy', async () => {
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, false, '')).toMatch(/not on this host/);
    expect(await buildCgroups({ CgroupDriver: 'systemd', CgroupVersion: '2' }, true, '')).toMatch(/"systemd" cgroup driver/);
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, true, `cgroup ${t.dir}/x cgroup rw,memory 0 0`)).toMatch(/no cgroup v1 pids/);
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '2' }, true, `cgroup ${t.dir}/x cgroup rw,pids 0 0`)).toMatch(/no cgroup2 mount/);
  });

  it('v1: one cgroup per build under berth-builds with pids.max, removed in every hierarchy after', async () => {
    const pids = join(t.dir, 'v1', 'pids');
    const mem = join(t.dir, 'v1', 'memory');
    const unified = join(t.dir, 'v1', 'unified');
    for (const d of [pids, mem, unified]) await mkdir(d, { recursive: true });
    const cg = await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, true,
      `cgroup ${pids} cgroup rw,pids 0 0\ncgroup ${mem} cgroup rw,memory 0 0\ncgroup2 ${unified} cgroup2 rw 0 0\n`);
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
    expect(await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '2' }, true, `cgroup2 ${root} cgroup2 rw 0 0`)).toMatch(/pids controller is not available in .*berth-builds \(the root cgroup does not hand it down\)/);
    await writeFile(join(root, BUILD_CGROUP_BASE, 'cgroup.controllers'), 'cpu memory pids\n');
    const cg = await buildCgroups({ CgroupDriver: 'cgroupfs', CgroupVersion: '2' }, true, `cgroup2 ${root} cgroup2 rw 0 0`);
    if (typeof cg === 'string') throw new Error(cg);
    // on a real cgroupfs each write adds one controller; a plain file keeps the last
    expect(readFileSync(join(root, BUILD_CGROUP_BASE, 'cgroup.subtree_control'), 'utf8')).toBe('+pids');
    const a = await cg.create(32);
    expect(readFileSync(join(root, a.parent, 'pids.max'), 'utf8')).toBe('32');
  });
});
