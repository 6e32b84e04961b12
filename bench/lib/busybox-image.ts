import type Docker from 'dockerode';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import tarStream from 'tar-stream';

/**
 * A base image made from the host's static busybox, for the tests and the cold-start benchmark on
 * machines with no registry: /bin/busybox plus applet symlinks, imported as one layer.
 * Idempotent (an existing image is kept).
 */
export const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
/** Applets linked in the base image (busybox-static provides them all). */
const APPLETS = ['sh', 'httpd', 'sleep', 'echo', 'cat', 'ls', 'true', 'false', 'wget', 'env', 'seq', 'yes', 'head'];

export async function ensureBusyboxImage(docker: Docker, ref: string): Promise<void> {
  try {
    await docker.getImage(ref).inspect();
    return;
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode !== 404) throw e;
  }
  if (!BUSYBOX) throw new Error('busybox not found: apt-get install -y busybox-static');
  const bin = await readFile(BUSYBOX);
  const pack = tarStream.pack();
  pack.entry({ name: 'bin', type: 'directory', mode: 0o755 });
  pack.entry({ name: 'bin/busybox', mode: 0o755, size: bin.length }, bin);
  for (const a of APPLETS) pack.entry({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox', mode: 0o777 });
  for (const d of ['www', 'tmp', 'etc']) pack.entry({ name: d, type: 'directory', mode: d === 'tmp' ? 0o1777 : 0o755 });
  pack.finalize();
  const [repo, tag] = ref.split(':');
  const stream = await docker.importImage(pack as unknown as NodeJS.ReadableStream, { repo, tag });
  await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolve())));
  await docker.getImage(ref).inspect();
}
