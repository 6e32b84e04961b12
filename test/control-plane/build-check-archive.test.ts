import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { isArchive, verifyBuildSources } from '../../control-plane/images/build-check.js';
import { makeTar } from '../helpers/archives.js';
import { tempDir } from '../helpers/tmp.js';

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

  it('reads a checksum as Go\'s tar reader does: NULs and spaces around it, a signed sum', async () => {
    const tar = Buffer.from((await makeTar([{ name: 'a.txt', content: 'x' }])).subarray(0, 512));
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : tar[i];
    // leading NULs, five digits, a trailing space
    tar.write('\0\0' + sum.toString(8).padStart(5, '0') + ' ', 148, 'latin1');
    expect(head(tar)).toBe(true);
    // a signed sum (bytes ≥ 0x80 count negative, as old writers summed them)
    const signed = Buffer.from((await makeTar([{ name: 'a.txt', content: 'x' }])).subarray(0, 512));
    signed.fill(0xff, 345, 400); // (the prefix field, unused here)
    let s = 0;
    for (let i = 0; i < 512; i++) { const v = i >= 148 && i < 156 ? 32 : signed[i]; s += v > 127 ? v - 256 : v; }
    signed.write((s >>> 0).toString(8).slice(-7).padStart(7, '0') + '\0', 148, 'latin1');
    if (s >= 0) expect(head(signed)).toBe(true);
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

describe('ADD sources looked at before a build (build-check.ts verifyBuildSources)', () => {
  const never = {
    inspectImage: () => { throw new Error('no image is read for FROM scratch'); },
    pullImage: () => { throw new Error('no pull'); },
    buildRoom: () => { throw new Error('no pull'); },
  };
  const context = async (files: Record<string, string | Buffer>, links: Record<string, string> = {}) => {
    const t = await tempDir();
    for (const [name, content] of Object.entries(files)) {
      await mkdir(dirname(join(t.dir, 'ctx', name)), { recursive: true });
      await writeFile(join(t.dir, 'ctx', name), content);
    }
    for (const [name, target] of Object.entries(links)) await symlink(target, join(t.dir, 'ctx', name));
    return t;
  };

  it('an image that would have to be pulled from a registry not allowed fails before the pull (own tags too)', async () => {
    const runtime = {
      inspectImage: async () => null,
      buildRoom: async () => null,
      pullImage: () => { throw new Error('pulled'); },
    };
    const t = await context({ Dockerfile: 'FROM berth-u1-i3:latest\n' });
    try {
      await expect(verifyBuildSources(runtime as never, 1, join(t.dir, 'ctx'), { registries: ['registry.internal'] }))
        .rejects.toThrow(/its registry "docker\.io" is not one this platform pulls from/);
      await expect(verifyBuildSources(runtime as never, 1, join(t.dir, 'ctx'))).rejects.toThrow(/pulled/);
    } finally { await t.cleanup(); }
  });

  it('ADD of an archive is refused however the source reaches it; a directory holding one, plain files and COPY are fine; one outside the context is never read', async () => {
    const gz = gzipSync(Buffer.from('x'));
    const files = { 'real/bomb.gz': gz, 'other.txt': 'hi', 'site/app.js.gz': gz, 'site/index.html': '<p>' };
    const cases: Array<[string, Record<string, string>, RegExp | null]> = [
      // named plainly: that file itself
      ['FROM scratch\nADD real/bomb.gz /x\n', {}, /^ADD real\/bomb\.gz: it is an archive/],
      ['FROM scratch\nADD ["other.txt", "/real/bomb.gz", "/x/"]\n', {}, /^ADD real\/bomb\.gz: it is an archive/],
      // reached through a link, `..` segments, a link to a directory, a glob: refused while the context holds one anywhere
      ['FROM scratch\nADD link.gz /x\n', { 'link.gz': 'real/bomb.gz' }, /^ADD: the build context holds an archive \((real\/bomb|site\/app\.js)\.gz\)/],
      ['FROM scratch\nADD real/../real/bomb.gz /x\n', {}, /^ADD: the build context holds an archive/],
      ['FROM scratch\nADD dir/bomb.gz /x/\n', { dir: 'real' }, /^ADD: the build context holds an archive/],
      ['FROM scratch\nADD r*/*.gz /x/\n', {}, /^ADD: the build context holds an archive/],
      // a directory is copied as it is (pre-compressed assets beside the pages), plain files too
      ['FROM scratch\nADD site/ /html/\n', {}, null],
      ['FROM scratch\nADD . /app\n', {}, null],
      ['FROM scratch\nADD other.txt /x\n', {}, null],
      ['FROM scratch\nCOPY real/bomb.gz /x\n', {}, null],
    ];
    for (const [df, links, refusal] of cases) {
      const inside = await context({ Dockerfile: df, ...files }, links);
      try {
        const p = verifyBuildSources(never, 1, join(inside.dir, 'ctx'));
        if (refusal) await expect(p, df).rejects.toThrow(refusal);
        else await expect(p, df).resolves.toBeUndefined();
      } finally { await inside.cleanup(); }
    }
    // a gzip file beside the context (outside it), reached by an absolute or a climbing link
    const outside = await context({ Dockerfile: 'FROM scratch\nADD a.gz b.gz /x/\n', 'ctx-sibling-placeholder': '' });
    try {
      await writeFile(join(outside.dir, 'host.gz'), gz);
      await symlink(join(outside.dir, 'host.gz'), join(outside.dir, 'ctx', 'a.gz'));
      await symlink('../host.gz', join(outside.dir, 'ctx', 'b.gz'));
      await expect(verifyBuildSources(never, 1, join(outside.dir, 'ctx'))).resolves.toBeUndefined();
    } finally { await outside.cleanup(); }
  });
});
