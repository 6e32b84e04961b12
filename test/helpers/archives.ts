import { deflateRawSync, crc32, gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';

/**
 * Archive builders for tests, able to produce hostile archives (absolute names, "..",
 * links out, devices) that well-behaved writers refuse to make.
 */

export interface TarEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
}

export async function makeTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => { chunks.push(c as Buffer); });
  const done = new Promise<void>((resolve, reject) => { pack.on('end', resolve); pack.on('error', reject); });
  for (const e of entries) {
    const type = e.type ?? 'file';
    const body = e.content === undefined ? undefined : Buffer.from(e.content);
    const header: Partial<tarStream.Header> & { name: string } = { name: e.name, type, mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644), ...(e.linkname !== undefined ? { linkname: e.linkname } : {}) };
    if (type === 'file') { header.size = body?.length ?? 0; pack.entry(header as tarStream.Header, body ?? Buffer.alloc(0)); }
    else { if (type === 'character-device' || type === 'block-device') { header.devmajor = 1; header.devminor = 3; } pack.entry(header as tarStream.Header); }
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export async function makeTgz(entries: TarEntry[]): Promise<Buffer> {
  return gzipSync(await makeTar(entries));
}

export interface ZipEntry {
  name: string;
  content?: string | Buffer;
  /** full unix mode including type bits, e.g. 0o100644, 0o120777 (symlink), 0o020644 (char device) */
  mode?: number;
  deflate?: boolean;
}

/** A minimal ZIP writer (stored or deflated entries, unix modes in the external attributes). */
export function makeZip(entries: ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const data = Buffer.from(e.content ?? '');
    const comp = e.deflate ? deflateRawSync(data) : data;
    const crc = crc32(data);
    const method = e.deflate ? 8 : 0;
    const mode = e.mode ?? (e.name.endsWith('/') ? 0o040755 : 0o100644);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(20, 4); local.writeUInt16LE(0x0800, 6); local.writeUInt16LE(method, 8);
    local.writeUInt32LE(crc, 14); local.writeUInt32LE(comp.length, 18); local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26); local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0); central.writeUInt16LE((3 << 8) | 20, 4); central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8); central.writeUInt16LE(method, 10); central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(comp.length, 20); central.writeUInt32LE(data.length, 24); central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE((mode << 16) >>> 0, 38); central.writeUInt32LE(offset, 42);
    locals.push(local, name, comp);
    centrals.push(central, name);
    offset += local.length + name.length + comp.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(entries.length, 8); end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12); end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** A tiny web app for tests: busybox httpd serving /www on $PORT (default 8080). */
export function appFiles(opts: { extraDockerfile?: string; index?: string } = {}): TarEntry[] {
  return [
    { name: 'Dockerfile', content: `FROM berth-test/busybox:1\nCOPY www /www\n${opts.extraDockerfile ?? ''}CMD ["sh", "-c", "httpd -f -p \${PORT:-8080} -h /www"]\n` },
    { name: 'www/', type: 'directory' },
    { name: 'www/index.html', content: opts.index ?? '<h1>hello from berth</h1>\n' },
  ];
}
