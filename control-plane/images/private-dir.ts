import { chmod, mkdir } from 'node:fs/promises';

/**
 * A directory only berth can enter (0700), created when missing and tightened when it exists:
 * uploads, build contexts and staging dirs hold other people's source code.
 */
export async function privateDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 });
  await chmod(path, 0o700);
}
