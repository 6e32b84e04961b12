import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { BuildDiskWatch } from '../../control-plane/runtime/build-disk.js';

// The per-step measurement needs builds (test/control-plane/build.test.ts); the free-disk floor
// reads this host's real filesystem.
describe('build disk watch: the free-disk floor', () => {
  const watch = (bytes: number, onOver: (m: string) => void) => new BuildDiskWatch(new Docker(), {
    limitBytes: null, containers: null, floor: { path: tmpdir(), bytes }, onOver,
  });

  it('stops a build when the disk has less free than the floor, once, saying how much is free', async () => {
    const free = (await statfs(tmpdir())).bavail * (await statfs(tmpdir())).bsize;
    const said: string[] = [];
    const w = watch(free + 1024 ** 4, (m) => said.push(m));
    await w.poll();
    await w.poll();
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/^the Docker host is short of disk: [\d.]+ (MiB|GiB) free, less than BERTH_BUILD_MIN_FREE \([\d.]+ GiB\)$/);
  });

  it('says nothing while there is room', async () => {
    const said: string[] = [];
    await watch(1, (m) => said.push(m)).poll();
    expect(said).toEqual([]);
  });
});
