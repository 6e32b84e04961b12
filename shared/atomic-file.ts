import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * `data` into `file` whole or not at all: written to a fresh file of its own beside it (a
 * leftover one from a crash removed first — its mode would stay), flushed to the disk, then
 * renamed over `file`. A crash or a power cut leaves the old content or the new, never half.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await rm(tmp, { force: true });
  await writeFile(tmp, data, { mode, flag: 'wx', flush: true });
  await rename(tmp, file);
}
