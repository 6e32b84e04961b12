import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { isArchive } from '../../control-plane/images/build-check.js';
import { makeTar } from '../helpers/archives.js';

const head = (b: Buffer) => {
  const h = Buffer.alloc(512);
  b.copy(h, 0, 0, 512);
  return isArchive(h, Math.min(512, b.length));
};

describe('what ADD would unpack (build-check.ts isArchive)', () => {
  it('knows tar (ustar and old headers without the magic), gzip, bzip2, xz and zstd (with a skippable frame first)', async () => {
    const tar = await makeTar([{ name: 'a.txt', content: 'x' }]);
    expect(head(tar)).toBe(true);
    // an old (v7) header: no "ustar", the checksum made anew — Go's reader takes it
    const v7 = Buffer.from(tar.subarray(0, 512));
    v7.fill(0, 257, 512);
    v7.fill(32, 148, 156);
    let sum = 0;
    for (const c of v7) sum += c;
    v7.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
    expect(head(v7)).toBe(true);
    expect(head(gzipSync(Buffer.from('x')))).toBe(true);
    expect(head(Buffer.from('BZh91AY&SY'))).toBe(true);
    expect(head(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0]))).toBe(true);
    expect(head(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0]))).toBe(true);
    expect(head(Buffer.from([0x5a, 0x2a, 0x4d, 0x18, 4, 0, 0, 0]))).toBe(true);
  });

  it('leaves other files alone: text, a zero block, a header with a wrong checksum', async () => {
    expect(head(Buffer.from('hello\n'))).toBe(false);
    expect(head(Buffer.alloc(512))).toBe(false);
    const bad = Buffer.from((await makeTar([{ name: 'a.txt', content: 'x' }])).subarray(0, 512));
    bad.fill(0, 257, 263); // no magic
    bad[0] ^= 1; // and the checksum no longer fits
    expect(head(bad)).toBe(false);
    expect(head(Buffer.from('{"json": true}'))).toBe(false);
  });
});
