import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, lstat, mkdir, open, readdir, readlink, realpath, symlink, unlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import yauzl from 'yauzl';
import { ArchiveError, checkLinkTarget, ensureDir, isInside, safeEntryPath, type ArchiveLimits } from './safe-path.js';

export { ArchiveError, type ArchiveLimits } from './safe-path.js';

export type ArchiveFormat = 'zip' | 'tar' | 'tar.gz';

/** Detect the format from magic bytes, never from the file name. */
export async function detectFormat(file: string): Promise<ArchiveFormat> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    if (bytesRead >= 4 && buf[0] === 0x50 && buf[1] === 0x4b && (buf[2] === 3 || buf[2] === 5 || buf[2] === 7)) return 'zip';
    if (bytesRead >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) return 'tar.gz';
    if (bytesRead >= 262 && buf.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
    if (bytesRead === 0) throw new ArchiveError('the uploaded file is empty');
    throw new ArchiveError('the uploaded file is not a zip, tar or tar.gz archive');
  } finally {
    await fh.close();
  }
}

class Budget {
  entries = 0;
  bytes = 0;
  constructor(readonly limits: ArchiveLimits) {}
  entry(name: string): void {
    if (++this.entries > this.limits.maxEntries) throw new ArchiveError(`entry "${name}": archive has more than ${this.limits.maxEntries} entries`);
  }
  counter(name: string): Transform {
    return new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        this.bytes += chunk.length;
        if (this.bytes > this.limits.maxBytes) cb(new ArchiveError(`entry "${name}": archive expands to more than ${this.limits.maxBytes} bytes`));
        else cb(null, chunk);
      },
    });
  }
}

/** Writes entries under `root` with every check applied; shared by the zip and tar readers. */
class Writer {
  /** directories made or checked already (ensureDir): each entry checks only what is new in its path */
  private readonly known = new Set<string>();

  constructor(readonly root: string, readonly realRoot: string, readonly budget: Budget) {}

  async dir(name: string, rel: string): Promise<void> {
    await ensureDir(this.root, this.realRoot, rel, name, this.known);
  }

  private async target(name: string, rel: string): Promise<string> {
    if (rel === '') throw new ArchiveError(`entry "${name}": not a file name`);
    const parent = await ensureDir(this.root, this.realRoot, posix.dirname(rel) === '.' ? '' : posix.dirname(rel), name, this.known);
    const abs = join(parent, posix.basename(rel));
    // A later entry replaces an earlier one; unlink never follows a symlink.
    try {
      const st = await lstat(abs);
      if (st.isDirectory()) throw new ArchiveError(`entry "${name}": a directory with this name already exists`);
      await unlink(abs);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return abs;
  }

  async file(name: string, rel: string, data: Readable, mode: number): Promise<void> {
    const abs = await this.target(name, rel);
    // O_EXCL: never write through a symlink planted at this name.
    // readable by berth only; the executable bit is kept and becomes 0755 / 0644 in the image (packDirectory)
    const out = createWriteStream(abs, { flags: 'wx', mode: mode & 0o111 ? 0o700 : 0o600 });
    await pipeline(data, this.budget.counter(name), out);
  }

  async symlink(name: string, rel: string, target: string): Promise<void> {
    checkLinkTarget(rel || name, target);
    const abs = await this.target(name, rel);
    await symlink(target.replace(/\\/g, '/'), abs);
  }

  async hardlink(name: string, rel: string, linkname: string): Promise<void> {
    let src: string;
    try { src = safeEntryPath(linkname); } catch { throw new ArchiveError(`entry "${name}": hard link to "${linkname}" points outside the archive`); }
    const srcAbs = join(this.root, src);
    const real = await realpath(srcAbs).catch(() => undefined);
    const st = real ? await lstat(real) : undefined;
    if (!real || !st?.isFile() || !isInside(this.realRoot, real)) throw new ArchiveError(`entry "${name}": hard link target "${linkname}" is not a file in the archive`);
    this.budget.bytes += st.size;
    if (this.budget.bytes > this.budget.limits.maxBytes) throw new ArchiveError(`entry "${name}": archive expands to more than ${this.budget.limits.maxBytes} bytes`);
    const abs = await this.target(name, rel);
    await copyFile(real, abs);
  }
}

/**
 * Extract `file` (zip, tar or tar.gz, detected by content) into `dest` (created; must not exist
 * or be empty). Throws ArchiveError naming the entry for absolute paths, `..`, links leading
 * outside, device files, too many entries or bytes. The caller removes `dest` on error.
 */
export async function extractArchive(file: string, dest: string, limits: ArchiveLimits): Promise<{ format: ArchiveFormat; entries: number; bytes: number }> {
  const format = await detectFormat(file);
  const release = await extractions.acquire();
  try {
    await mkdir(dest, { recursive: true, mode: 0o700 });
    const writer = new Writer(dest, await realpath(dest), new Budget(limits));
    if (format === 'zip') await extractZip(file, writer);
    else await extractTar(file, format === 'tar.gz', writer);
    await verifyTree(dest, writer.realRoot);
    return { format, entries: writer.budget.entries, bytes: writer.budget.bytes };
  } finally {
    release();
  }
}

/** Extractions are CPU- and disk-heavy: at most a few run at once, the rest wait their turn. */
class Semaphore {
  private active = 0;
  private waiters: (() => void)[] = [];
  constructor(public max: number) {}
  async acquire(): Promise<() => void> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiters.push(r));
    else this.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else this.active--;
    };
  }
  get stats() { return { active: this.active, waiting: this.waiters.length }; }
}
export const extractions = new Semaphore(2);

/**
 * Bytes of the tar stream itself (after gunzip), headers and padding included: tar-stream skips
 * runs of zero blocks without reporting them, so without this a small .tgz of zeros would keep a
 * core busy for as long as it inflates. Allows the body budget plus three blocks per entry.
 */
function tarStreamCounter(limits: ArchiveLimits): Transform {
  const max = limits.maxBytes + (limits.maxEntries + 2) * 1536;
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max) cb(new ArchiveError(`archive expands to more than ${max} bytes of tar data (limit ${limits.maxBytes} bytes of content)`));
      else cb(null, chunk);
    },
  });
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true, autoClose: true }, (err, zf) => {
      if (err || !zf) reject(new ArchiveError(`invalid zip archive: ${err?.message ?? 'unreadable'}`));
      else resolve(zf);
    });
  });
}

async function extractZip(file: string, w: Writer): Promise<void> {
  const zf = await openZip(file);
  if (zf.entryCount > w.budget.limits.maxEntries) {
    zf.close();
    throw new ArchiveError(`archive has ${zf.entryCount} entries, more than ${w.budget.limits.maxEntries}`);
  }
  const openStream = (entry: yauzl.Entry) => new Promise<Readable>((resolve, reject) => {
    zf.openReadStream(entry, (err, s) => (err || !s ? reject(new ArchiveError(`invalid zip entry: ${err?.message}`)) : resolve(s)));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const fail = (e: unknown) => { reject(e instanceof ArchiveError ? e : new ArchiveError(`invalid zip archive: ${reason(e)}`)); };
      zf.on('error', fail);
      zf.on('end', resolve);
      zf.on('entry', (entry: yauzl.Entry) => {
        (async () => {
          const raw = entry.fileName as unknown as Buffer | string;
          const name = typeof raw === 'string' ? raw : raw.toString('utf8');
          w.budget.entry(name);
          const rel = safeEntryPath(name);
          const madeByUnix = entry.versionMadeBy >> 8 === 3;
          const mode = madeByUnix ? (entry.externalFileAttributes >>> 16) & 0xffff : 0;
          const type = mode & S_IFMT;
          if (name.endsWith('/') || name.endsWith('\\') || type === S_IFDIR) {
            await w.dir(name, rel);
          } else if (type === S_IFLNK) {
            if (entry.uncompressedSize > 4096) throw new ArchiveError(`entry "${name}": symlink target too long`);
            const chunks: Buffer[] = [];
            for await (const c of await openStream(entry)) chunks.push(c as Buffer);
            await w.symlink(name, rel, Buffer.concat(chunks).toString('utf8'));
          } else if (type === 0 || type === S_IFREG) {
            if (w.budget.bytes + entry.uncompressedSize > w.budget.limits.maxBytes) throw new ArchiveError(`entry "${name}": archive expands to more than ${w.budget.limits.maxBytes} bytes`);
            await w.file(name, rel, await openStream(entry), mode);
          } else {
            throw new ArchiveError(`entry "${name}": device files, fifos and sockets are not allowed`);
          }
        })().then(() => zf.readEntry(), (e) => { zf.close(); fail(e); });
      });
      zf.readEntry();
    });
  } finally {
    if (zf.isOpen) zf.close();
  }
}

async function extractTar(file: string, gzip: boolean, w: Writer): Promise<void> {
  const extract = tarStream.extract();
  let rejected: ArchiveError | undefined; // the reason we stopped, preferred over the stream errors it causes
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      (async () => {
        const name = header.name;
        w.budget.entry(name);
        const rel = safeEntryPath(name);
        switch (header.type) {
          case 'directory':
            await w.dir(name, rel);
            break;
          case 'file':
          case 'contiguous-file':
            await w.file(name, rel, stream as unknown as Readable, header.mode ?? 0o644);
            return;
          case 'symlink':
            await w.symlink(name, rel, header.linkname ?? '');
            break;
          case 'link':
            await w.hardlink(name, rel, header.linkname ?? '');
            break;
          case 'character-device':
          case 'block-device':
          case 'fifo':
            throw new ArchiveError(`entry "${name}": device files and fifos are not allowed (${header.type})`);
          default:
            break; // metadata entries (pax, gnu) are handled by tar-stream; others carry nothing to extract
        }
        stream.resume();
      })().then(() => next(), (e) => {
        if (e instanceof ArchiveError) rejected ??= e;
        stream.resume();
        extract.destroy(e as Error);
      });
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  const source = createReadStream(file);
  try {
    await Promise.all([
      gzip ? pipeline(source, createGunzip(), tarStreamCounter(w.budget.limits), extract) : pipeline(source, tarStreamCounter(w.budget.limits), extract),
      done,
    ]);
  } catch (e) {
    if (rejected) throw rejected;
    if (e instanceof ArchiveError) throw e;
    throw new ArchiveError(`invalid ${gzip ? 'tar.gz' : 'tar'} archive: ${reason(e)}`);
  }
}

/**
 * Last line of defence: every symlink left in the tree is resolved component by component
 * through the tree itself (following intermediate links, as the kernel would) and must end
 * inside the root. Where a component does not exist, the rest is resolved lexically from the
 * real directory reached so far: a dangling link counts as outside unless that lands inside.
 */
async function verifyTree(root: string, realRoot: string, rel = ''): Promise<void> {
  for (const ent of await readdir(join(root, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${ent.name}` : ent.name;
    const abs = join(root, r);
    if (ent.isSymbolicLink()) {
      const target = await readlink(abs);
      const why = await resolvesOutside(realRoot, rel ? rel.split('/') : [], target);
      if (why) throw new ArchiveError(`entry "${r}": link "${target}" ${why}`);
    } else if (ent.isDirectory()) {
      await verifyTree(root, realRoot, r);
    }
  }
}

const MAX_LINK_HOPS = 40; // Linux's MAXSYMLINKS

/**
 * Resolve link text `target` of a link living in directory `parent` (components under `root`),
 * without leaving the tree. Returns why it is unsafe, or undefined when it stays inside.
 */
async function resolvesOutside(root: string, parent: string[], target: string): Promise<string | undefined> {
  const stack = [...parent]; // real (link-free) path under root reached so far
  let todo = target.replace(/\\/g, '/').split('/');
  if (target.startsWith('/') || target.startsWith('\\') || /^[A-Za-z]:/.test(target)) return 'is absolute';
  let hops = 0;
  let dangling = false; // once a component is missing, the rest is resolved lexically
  while (todo.length) {
    const comp = todo.shift()!;
    if (comp === '' || comp === '.') continue;
    if (comp === '..') {
      if (stack.length === 0) return dangling ? 'dangles and resolves outside the archive' : 'resolves outside the archive';
      stack.pop();
      continue;
    }
    stack.push(comp);
    if (dangling) continue;
    const st = await lstat(join(root, ...stack)).catch(() => undefined);
    if (!st) { dangling = true; continue; }
    if (st.isSymbolicLink()) {
      if (++hops > MAX_LINK_HOPS) return 'goes through too many links';
      const next = await readlink(join(root, ...stack));
      if (next.startsWith('/') || next.startsWith('\\') || /^[A-Za-z]:/.test(next)) return `goes through a link to the absolute path "${next}"`;
      stack.pop();
      todo = [...next.replace(/\\/g, '/').split('/'), ...todo];
    } else if (!st.isDirectory() && todo.some((c) => c !== '' && c !== '.')) {
      dangling = true; // a path through a regular file does not resolve either
    }
  }
  return undefined;
}

/**
 * What went wrong, for the tenant: a parser's message as it is, a file-system error by its code
 * only (its message names the server's data directory).
 */
function reason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && (e as NodeJS.ErrnoException).syscall !== undefined) return `could not write an entry (${code})`;
  return (e as Error).message;
}
