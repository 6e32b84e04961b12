/**
 * Summarise a V8 .cpuprofile (written by `node --cpu-prof`): self time by category
 * (uWS/native, undici, berth code, node internals, GC) and the top functions.
 * Used by BENCH_PROFILE=1; also runnable on its own:
 *   node dist/bench/macro/profile.js FILE.cpuprofile [CPU_US_PER_REQUEST]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fmt, table } from '../lib/format.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  file: string;
  busyMs: number;
  categories: Array<{ category: string; pct: number; usPerReq?: number }>;
  top: Array<{ fn: string; pct: number; usPerReq?: number }>;
  text: string;
}

function category(fn: string, url: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)') return '(program): VM / uWS C++ outside JS';
  if (fn === '(idle)') return 'idle';
  if (url.includes('node_modules/undici')) return 'undici';
  if (url.includes('uWebSockets.js') || url.includes('uws-js')) return 'uWS JS glue';
  if (url.includes('node_modules/pino') || url.includes('node_modules/lru-cache')) return 'pino / lru-cache';
  if (url.includes('node_modules/')) return 'other node_modules';
  if (url.includes('/dist/proxy/')) return 'berth proxy/';
  if (url.includes('/dist/shared/')) return 'berth shared/';
  if (url.startsWith('node:')) return 'node internals';
  if (url.startsWith('wasm://')) return 'wasm (undici llhttp parser)';
  if (url === '') return 'native builtins / C++ bindings (incl. uWS calls)';
  return 'other';
}

function short(url: string): string {
  const i = url.lastIndexOf('/dist/');
  if (i !== -1) return url.slice(i + 6);
  const j = url.lastIndexOf('node_modules/');
  if (j !== -1) return url.slice(j + 13);
  return url;
}

export function summariseProfile(file: string, cpuUsPerReq?: number): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) selfUs.set(p.samples[i], (selfUs.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  const cats = new Map<string, number>();
  const fns = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    const c = category(functionName, url);
    if (c === 'idle') continue;
    busy += us;
    cats.set(c, (cats.get(c) ?? 0) + us);
    const key = `${functionName || '(anonymous)'} ${url ? `${short(url)}:${lineNumber + 1}` : ''}`.trim();
    fns.set(key, (fns.get(key) ?? 0) + us);
  }
  const per = (us: number) => (cpuUsPerReq !== undefined && busy > 0 ? (us / busy) * cpuUsPerReq : undefined);
  const categories = [...cats].sort((a, b) => b[1] - a[1]).map(([category, us]) => ({ category, pct: (us / busy) * 100, usPerReq: per(us) }));
  const top = [...fns].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([fn, us]) => ({ fn, pct: (us / busy) * 100, usPerReq: per(us) }));
  const perHead = cpuUsPerReq !== undefined ? [`≈µs/req (of ${fmt(cpuUsPerReq, 1)})`] : [];
  const text = [
    `profile ${file}: ${fmt(busy / 1000)} ms busy (idle excluded)`,
    table(['category', 'self %', ...perHead], categories.map((c) => [c.category, fmt(c.pct, 1), ...(c.usPerReq !== undefined ? [fmt(c.usPerReq, 1)] : [])])),
    '',
    table(['top functions (self time)', 'self %', ...perHead], top.map((c) => [c.fn, fmt(c.pct, 1), ...(c.usPerReq !== undefined ? [fmt(c.usPerReq, 1)] : [])])),
  ].join('\n');
  return { file, busyMs: busy / 1000, categories, top, text };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, us] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: node dist/bench/macro/profile.js FILE.cpuprofile [CPU_US_PER_REQUEST]\n');
    process.exit(2);
  }
  process.stdout.write(summariseProfile(file, us ? Number(us) : undefined).text + '\n');
}
