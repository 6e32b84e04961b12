import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { RouteTableSpec } from '../../shared/routes/schema.js';
import { parseRouteTable } from '../../shared/routes/validate.js';

/**
 * A route table from a JSON file, re-read when the file changes. Watches the directory, not the
 * file, so editors and `mv tmp routes.json` (atomic replace) are seen. Invalid contents are
 * reported and ignored; the previous table keeps serving.
 */
export class FileSource {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastText = '';
  /** reloads started: a read that finishes after a newer one started is dropped (the newer one is the file now) */
  private generation = 0;
  readonly path: string;

  constructor(path: string, private readonly onTable: (t: RouteTableSpec) => Promise<void>, private readonly onError: (e: Error) => void) {
    this.path = resolve(path);
  }

  /** Read once (throws on a missing or invalid file), then watch. */
  async start(): Promise<RouteTableSpec> {
    const text = await readFile(this.path, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new Error(`cannot read route table ${this.path}: ${e.code ?? e.message}`);
    });
    const spec = parseRouteTable(text);
    this.lastText = text;
    await this.onTable(spec);
    const name = basename(this.path);
    this.watcher = watch(dirname(this.path), (_ev, file) => {
      if (file !== null && file !== name) return;
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.reload(), 50);
    });
    this.watcher.on('error', (e) => this.onError(e));
    return spec;
  }

  private async reload(): Promise<void> {
    const mine = ++this.generation;
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if (mine !== this.generation) return;
      this.onError(new Error(`route table ${this.path} unreadable: ${(e as NodeJS.ErrnoException).code}; keeping the current table`));
      return;
    }
    if (mine !== this.generation || text === this.lastText) return;
    try {
      const spec = parseRouteTable(text);
      this.lastText = text;
      await this.onTable(spec);
    } catch (e) {
      this.lastText = text;
      this.onError(new Error(`route table ${this.path} rejected, keeping the current table: ${(e as Error).message}`));
    }
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
  }
}
