import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdtemp, readFile, readdir, readlink, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import dockerignore from '@balena/dockerignore';
import tarStream from 'tar-stream';
import { ClientError, EXIT } from './client.js';

/**
 * Pack a source folder for `berth deploy` into a gzipped tar in a temp file, the way
 * `docker build` would send its context:
 * - `.dockerignore` at the root is honoured with Docker's own matching rules (@balena/dockerignore,
 *   a port of moby's): `*` stays in one directory, `!` re-includes, also below an ignored directory.
 *   The Dockerfile and .dockerignore are always sent, as Docker does.
 * - Symlinks are packed as links, never followed; one that leads out of the folder (directly or
 *   through another link) refuses the whole deploy, naming it. Sockets, FIFOs and devices too.
 * - File modes are kept (executable scripts stay executable); owners and times are not sent.
 */

export interface PackResult {
  /** path of the .tar.gz; remove with cleanup() */
  file: string;
  bytes: number;
  files: number;
  /** bytes of the files before compression */
  rawBytes: number;
  ignored: number;
  /** what to tell the user: secrets left out, files packed that usually hold secrets (`.env*`, `.git/`) */
  warnings: string[];
  cleanup(): Promise<void>;
}

/** Largest .dockerignore read (Docker's own limit is far above any real one). */
const MAX_DOCKERIGNORE_BYTES = 1024 * 1024;

/**
 * `secrets`: files that are never packed (the --env-file whose values go as variables, the berth
 * credentials file): left out, and said so in `warnings`. Other files that usually hold secrets
 * (`.env*`, `.git/`) are packed as Docker would, and named in `warnings`.
 */
export async function packDirectory(dirArg: string, secrets: Array<{ path: string; what: string }> = []): Promise<PackResult> {
  let root: string;
  try {
    root = await realpath(resolve(dirArg));
  } catch {
    throw new ClientError(`${dirArg}: no such directory`, EXIT.usage);
  }
  if (!(await stat(root)).isDirectory()) throw new ClientError(`${dirArg} is not a directory`, EXIT.usage);
  const df = await lstat(join(root, 'Dockerfile')).catch(() => undefined);
  if (!df?.isFile()) throw new ClientError(`${dirArg} has no Dockerfile at its root (a regular file named exactly "Dockerfile")`, EXIT.failed);

  // looked at before it is read: a link or a FIFO there (a cloned repository may hold either)
  // would read another file, or hang; it is sent as-is below only as a regular file
  const di = await lstat(join(root, '.dockerignore')).catch(() => undefined);
  if (di !== undefined && !di.isFile()) throw new ClientError(`refusing to deploy: ${dirArg}/.dockerignore is not a regular file (a link, FIFO or device)`, EXIT.failed);
  if (di !== undefined && di.size > MAX_DOCKERIGNORE_BYTES) throw new ClientError(`refusing to deploy: ${dirArg}/.dockerignore is ${di.size} bytes; at most ${MAX_DOCKERIGNORE_BYTES}`, EXIT.failed);
  const rules = di === undefined ? '' : await readFile(join(root, '.dockerignore'), 'utf8');
  const secretPaths = new Map<string, string>();
  for (const x of secrets) {
    const real = await realpath(x.path).catch(() => undefined);
    if (real !== undefined) secretPaths.set(real, x.what);
  }
  const warnings: string[] = [];
  const lines = rules.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  // CommonJS with an ES-style default export: the function is module.exports.default
  const ignore = ((dockerignore as unknown as { default?: unknown }).default ?? dockerignore) as () => ReturnType<typeof dockerignore.default>;
  const ig = ignore().add(lines);
  const hasExceptions = lines.some((l) => l.startsWith('!'));
  const always = new Set(['Dockerfile', '.dockerignore']);

  const tmp = await mkdtemp(join(tmpdir(), 'berth-deploy-'));
  const file = join(tmp, 'source.tar.gz');
  const cleanup = () => rm(tmp, { recursive: true, force: true });
  const pack = tarStream.pack();
  const out = pipeline(pack, createGzip({ level: 6 }), createWriteStream(file, { mode: 0o600 }));
  let files = 0;
  let rawBytes = 0;
  let ignored = 0;

  const inside = (p: string) => p === root || p.startsWith(root + sep);
  const entry = (header: Parameters<tarStream.Pack['entry']>[0]) => new Promise<void>((res, rej) => {
    pack.entry(header, (err) => (err ? rej(err) : res()));
  });

  async function checkLink(abs: string, rel: string): Promise<string> {
    const target = await readlink(abs);
    const lexical = resolve(dirname(abs), target);
    // through other links too: where it really ends up (when it exists) must be inside
    const real = await realpath(abs).catch(() => undefined);
    if (!inside(lexical) || (real !== undefined && !inside(real))) {
      throw new ClientError(`refusing to deploy: symlink ${rel} points outside ${dirArg} (→ ${target}); berth never follows links out of the folder`, EXIT.failed);
    }
    // an absolute target inside the folder becomes relative (the build context has another root)
    return isAbsolute(target) ? relative(dirname(abs), lexical) || '.' : target;
  }

  const sentDirs = new Set<string>(['']);
  async function parents(relDir: string): Promise<void> {
    if (sentDirs.has(relDir)) return;
    await parents(relDir.includes('/') ? relDir.slice(0, relDir.lastIndexOf('/')) : '');
    await entry({ name: `${relDir}/`, type: 'directory', mode: 0o755 });
    sentDirs.add(relDir);
  }

  async function walk(relDir: string): Promise<void> {
    const names = (await readdir(join(root, relDir))).sort();
    for (const name of names) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const abs = join(root, rel);
      const st = await lstat(abs);
      // (no trailing slash on directories: the matcher would not see `dir` in `dir/`)
      const skip = !always.has(rel) && ig.ignores(rel);
      if (st.isDirectory()) {
        if (!skip && rel === '.git') warnings.push('.git/ is packed (the repository\'s whole history): add .git to .dockerignore if it should not be');
        if (!skip) { await entry({ name: `${rel}/`, type: 'directory', mode: st.mode & 0o7777 }); sentDirs.add(rel); }
        else ignored++;
        if (!skip || hasExceptions) await walk(rel);
        continue;
      }
      if (skip) { ignored++; continue; }
      await parents(relDir); // a file re-included (`!`) below an excluded directory still gets its directories
      if (st.isSymbolicLink()) {
        await entry({ name: rel, type: 'symlink', linkname: await checkLink(abs, rel), mode: 0o777 });
        files++;
      } else if (st.isFile()) {
        const what = secretPaths.get(abs);
        if (what !== undefined) {
          warnings.push(`${rel} is not packed: it is ${what}`);
          continue;
        }
        if (name.startsWith('.env')) warnings.push(`${rel} is packed (it usually holds secrets; a COPY puts them in the image): add it to .dockerignore if it should not be`);
        files++;
        rawBytes += st.size;
        await new Promise<void>((res, rej) => {
          const w = pack.entry({ name: rel, type: 'file', size: st.size, mode: st.mode & 0o7777 }, (err) => (err ? rej(err) : res()));
          createReadStream(abs).on('error', rej).pipe(w);
        });
      } else {
        throw new ClientError(`refusing to deploy: ${rel} is not a regular file, directory or symlink (a socket, FIFO or device)`, EXIT.failed);
      }
    }
  }

  try {
    await walk('');
    pack.finalize();
    await out;
  } catch (e) {
    pack.destroy();
    await out.catch(() => {});
    await cleanup();
    throw e;
  }
  return { file, bytes: (await stat(file)).size, files, rawBytes, ignored, warnings, cleanup };
}
