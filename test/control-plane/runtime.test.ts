import { readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packDirectory } from '../../control-plane/runtime/docker.js';
import { tempDir } from '../helpers/tmp.js';

let tmp: { dir: string; cleanup(): Promise<void> };
beforeAll(async () => {
  tmp = await tempDir('berth-pack-');
  await writeFile(join(tmp.dir, 'Dockerfile'), 'FROM scratch\n');
  await mkdir(join(tmp.dir, 'data'));
  for (let i = 0; i < 5; i++) await writeFile(join(tmp.dir, 'data', `big${i}.bin`), Buffer.alloc(4 * 1024 * 1024, i));
});
afterAll(async () => { await tmp.cleanup(); });

const openFiles = () => readdirSync('/proc/self/fd').length;
const settle = () => new Promise((r) => setTimeout(r, 200));

describe('packDirectory (the build context stream)', () => {
  it('packs the whole tree when read to the end', async () => {
    let bytes = 0;
    for await (const c of packDirectory(tmp.dir)) bytes += (c as Buffer).length;
    expect(bytes).toBeGreaterThan(20 * 1024 * 1024);
  });

  it('destroyed half-way (an aborted build) closes the file it was reading and stops walking', async () => {
    await settle();
    const before = openFiles();
    const pack = packDirectory(tmp.dir);
    // read a little, then stop reading and destroy, as an aborted Docker request leaves it
    // into the first big file
    await new Promise<void>((resolve) => { let n = 0; pack.on('data', (c) => { n += (c as Buffer).length; if (n > 1024 * 1024) { pack.pause(); resolve(); } }); });
    expect(openFiles()).toBeGreaterThan(before); // a context file is open
    pack.destroy();
    await settle();
    expect(openFiles()).toBe(before);
  });
});
