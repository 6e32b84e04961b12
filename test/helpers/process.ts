import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const berthBin = join(repoRoot, 'bin', 'berth.js');

export interface Spawned {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Run `node bin/berth.js ...args` (needs a build: `npm test` builds first). */
export function spawnBerth(args: string[], env: Record<string, string | undefined> = {}): Spawned {
  const child = spawn(process.execPath, [berthBin, ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c) => { out += c; });
  child.stderr!.on('data', (c) => { out += c; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, output: () => out, exited };
}

/** Poll `url` until it answers 200 (or the process exits, or time runs out). */
export async function waitForOk(url: string, p?: Spawned, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let exited = false;
  p?.exited.then(() => { exited = true; });
  for (;;) {
    if (exited) throw new Error(`process exited before ${url} was ready:\n${p?.output()}`);
    try { if ((await fetch(url)).status === 200) return; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`${url} not ready after ${timeoutMs}ms\n${p?.output() ?? ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
