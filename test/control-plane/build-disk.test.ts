import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { BuildDiskWatch } from '../../control-plane/runtime/build-disk.js';

// The per-step measurement needs builds (test/control-plane/build.test.ts); the free-disk floor
// reads this host's real filesystem.
describe('build disk watch: the free-disk floor', () => {
  const logged: Array<[number, number]> = [];
  const watch = (bytes: number, onOver: (m: string) => void) => new BuildDiskWatch(new Docker(), {
    limitBytes: null, containers: null, floor: { path: tmpdir(), bytes }, onOver, onLowDisk: (free, floor) => logged.push([free, floor]),
  });

  it('stops a build when the disk has less free than the floor, once, saying how much is free', async () => {
    const free = (await statfs(tmpdir())).bavail * (await statfs(tmpdir())).bsize;
    const said: string[] = [];
    const w = watch(free + 1024 ** 4, (m) => said.push(m));
    await w.poll();
    await w.poll();
    expect(said).toHaveLength(1);
    // the tenant hears that the host is short; the operator's log gets the figures
    expect(said[0]).toBe('the build host is short of disk space; try again later');
    expect(logged[0][1]).toBe(free + 1024 ** 4);
    expect(Math.abs(logged[0][0] - free)).toBeLessThan(1024 ** 3);
  });

  it('says nothing while there is room', async () => {
    const said: string[] = [];
    logged.length = 0;
    await watch(1, (m) => said.push(m)).poll();
    expect(said).toEqual([]);
    expect(logged).toEqual([]);
  });
});
