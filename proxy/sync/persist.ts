import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import type { RouteTableSpec } from '../../shared/routes/schema.js';
import { parseRouteTable } from '../../shared/routes/validate.js';

/**
 * Last table received from the control plane, kept on disk so a restarted proxy serves at once:
 * written whole to a file of its own, flushed to the disk, then renamed over the last one (a
 * crash or a power cut leaves the old table or the new one, never half of one). Readable by the
 * proxy only: it names every app's endpoints and private apps' token digests.
 *
 * `text` is the table as the control plane sent it (validated when it was applied, and again by
 * loadTable): not serialised again on the serving thread (some 6–13 ms for 10,000 routes, at
 * every push).
 */
export function saveTable(file: string, text: string): Promise<void> {
  return writeFileAtomic(file, text);
}

export async function loadTable(file: string): Promise<RouteTableSpec | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  return parseRouteTable(text);
}
