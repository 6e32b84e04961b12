import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { packDirectory } from '../../shared/client/pack.js';
import { tempDir } from '../helpers/tmp.js';

/** What `berth deploy` sends: Docker's .dockerignore rules, links never followed out of the folder. */

async function entries(file: string): Promise<Map<string, { type: string; mode: number; linkname?: string; body: string }>> {
  const out = new Map<string, { type: string; mode: number; linkname?: string; body: string }>();
  const ex = tarStream.extract();
  ex.on('entry', (h, stream, next) => {
    let body = '';
    stream.on('data', (c: unknown) => { body += String(c); });
    stream.on('end', () => { out.set(h.name, { type: h.type ?? 'file', mode: h.mode ?? 0, linkname: h.linkname ?? undefined, body }); next(); });
  });
  await new Promise<void>((resolve, reject) => {
    createReadStream(file).pipe(createGunzip()).pipe(ex).on('finish', resolve).on('error', reject);
  });
  return out;
}

describe('packDirectory', () => {
  let t: { dir: string; cleanup(): Promise<void> };
  let app: string;
  beforeEach(async () => {
    t = await tempDir('berth-pack-');
    app = join(t.dir, 'app');
    await mkdir(join(app, 'src', 'deep'), { recursive: true });
    await writeFile(join(app, 'Dockerfile'), 'FROM scratch\n');
  });
  afterEach(async () => { await t.cleanup(); });

  it("applies .dockerignore with Docker's rules: one-level *, **, ! re-including below an excluded dir; Dockerfile always sent", async () => {
    await writeFile(join(app, 'a.log'), '1');
    await writeFile(join(app, 'src', 'b.log'), '2');
    await writeFile(join(app, 'src', 'deep', 'c.tmp'), '3');
    await writeFile(join(app, 'src', 'keep.txt'), 'keep');
    await mkdir(join(app, 'node_modules', 'x'), { recursive: true });
    await writeFile(join(app, 'node_modules', 'x', 'index.js'), 'junk');
    await writeFile(join(app, 'node_modules', 'x', 'LICENSE'), 'license');
    await writeFile(join(app, '.dockerignore'), '# comment\n*.log\n**/*.tmp\nnode_modules\n!node_modules/x/LICENSE\nDockerfile\n.dockerignore\n');
    const p = await packDirectory(app);
    try {
      const e = await entries(p.file);
      expect([...e.keys()].sort()).toEqual([
        '.dockerignore', 'Dockerfile', 'node_modules/', 'node_modules/x/', 'node_modules/x/LICENSE', 'src/', 'src/b.log', 'src/deep/', 'src/keep.txt',
      ]);
      expect(p.files).toBe(5);
      expect(p.ignored).toBeGreaterThanOrEqual(4);
    } finally {
      await p.cleanup();
    }
  });

  it('keeps links inside the folder as links (absolute ones made relative) and file modes', async () => {
    await writeFile(join(app, 'src', 'run.sh'), '#!/bin/sh\n');
    await chmod(join(app, 'src', 'run.sh'), 0o755);
    await symlink('run.sh', join(app, 'src', 'start.sh'));
    await symlink(join(app, 'src', 'run.sh'), join(app, 'abs-link'));
    const p = await packDirectory(app);
    try {
      const e = await entries(p.file);
      expect(e.get('src/run.sh')!.mode & 0o777).toBe(0o755);
      expect(e.get('src/start.sh')).toMatchObject({ type: 'symlink', linkname: 'run.sh' });
      expect(e.get('abs-link')).toMatchObject({ type: 'symlink', linkname: 'src/run.sh' });
    } finally {
      await p.cleanup();
    }
  });

  it('refuses links that lead out, directly, through ../ or through another link', async () => {
    await symlink('/etc/passwd', join(app, 'src', 'passwd'));
    await expect(packDirectory(app)).rejects.toThrow(/symlink src\/passwd points outside/);
    execFileSync('rm', [join(app, 'src', 'passwd')]);
    await symlink('../../outside', join(app, 'src', 'up'));
    await expect(packDirectory(app)).rejects.toThrow(/symlink src\/up points outside/);
    execFileSync('rm', [join(app, 'src', 'up')]);
    await symlink(t.dir, join(app, 'hop'));
    await symlink('hop/other', join(app, 'via'));
    await expect(packDirectory(app)).rejects.toThrow(/symlink (hop|via) points outside/);
  });

  it('refuses FIFOs, a missing Dockerfile and a missing folder', async () => {
    execFileSync('mkfifo', [join(app, 'pipe')]);
    await expect(packDirectory(app)).rejects.toThrow(/pipe is not a regular file/);
    const empty = join(t.dir, 'empty');
    await mkdir(empty);
    await expect(packDirectory(empty)).rejects.toThrow(/no Dockerfile/);
    await expect(packDirectory(join(t.dir, 'nope'))).rejects.toThrow(/no such directory/);
  });

  it('a .dockerignore that is a FIFO or a link is refused before it is read (it would hang, or read another file)', async () => {
    execFileSync('mkfifo', [join(app, '.dockerignore')]);
    await expect(packDirectory(app)).rejects.toThrow(/\.dockerignore is not a regular file/);
    const other = join(t.dir, 'other');
    await mkdir(other);
    await writeFile(join(other, 'Dockerfile'), 'FROM scratch\n');
    await symlink('/dev/zero', join(other, '.dockerignore'));
    await expect(packDirectory(other)).rejects.toThrow(/\.dockerignore is not a regular file/);
  });

  it('the --env-file and the credentials file are never packed; .env files and .git are packed with a warning', async () => {
    await writeFile(join(app, 'prod.env'), 'SECRET=1\n');
    await writeFile(join(app, '.env'), 'A=1\n');
    await mkdir(join(app, '.git'));
    const p = await packDirectory(app, [{ path: join(app, 'prod.env'), what: 'the --env-file' }]);
    try {
      const said = p.warnings.join('\n');
      expect(said).toMatch(/^prod\.env is not packed: it is the --env-file/m);
      expect(said).toMatch(/^\.env is packed/m);
      expect(said).toMatch(/\.git\/ is packed/);
      const got = await entries(p.file);
      expect(got.has('prod.env')).toBe(false);
      expect(got.has('.env')).toBe(true);
    } finally {
      await p.cleanup();
    }
  });

  it('an ignored link pointing out is not looked at (it is not sent)', async () => {
    await symlink('/etc', join(app, 'etc-link'));
    await writeFile(join(app, '.dockerignore'), 'etc-link\n');
    const p = await packDirectory(app);
    try {
      expect((await entries(p.file)).has('etc-link')).toBe(false);
    } finally {
      await p.cleanup();
    }
  });
});
