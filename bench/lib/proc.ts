/**
 * Child-process bookkeeping for the benchmarks: spawn (optionally pinned with taskset),
 * make sure everything we started dies with us (normal exit, error, SIGINT/SIGTERM),
 * and read CPU time / RSS of a process tree from /proc.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';

export interface Tracked {
  name: string;
  pid: number;
  child: ChildProcess;
  exited: Promise<number | null>;
  /** true once the process has exited */
  dead: boolean;
  logFile?: string;
}

const tracked = new Set<Tracked>();
let handlersInstalled = false;

function haveBinary(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

const binCache = new Map<string, boolean>();
export function which(bin: string): boolean {
  let v = binCache.get(bin);
  if (v === undefined) {
    v = haveBinary(bin);
    binCache.set(bin, v);
  }
  return v;
}

/** CPU placement: proxy under test on one core, load generator + upstream on another. */
export interface Pinning {
  enabled: boolean;
  proxyCpu: string;
  loadCpu: string;
  reason: string;
}

export function choosePinning(): Pinning {
  const n = availableParallelism();
  if (process.env.BENCH_PIN === '0') return { enabled: false, proxyCpu: '', loadCpu: '', reason: 'disabled by BENCH_PIN=0' };
  if (n < 2) return { enabled: false, proxyCpu: '', loadCpu: '', reason: `only ${n} CPU` };
  if (!which('taskset')) return { enabled: false, proxyCpu: '', loadCpu: '', reason: 'taskset not installed' };
  const proxyCpu = process.env.BENCH_PROXY_CPU ?? '0';
  const loadCpu = process.env.BENCH_LOAD_CPU ?? '1';
  return { enabled: true, proxyCpu, loadCpu, reason: `proxy on CPU ${proxyCpu}, load generator + upstream on CPU ${loadCpu}` };
}

export interface SpawnOpts {
  name: string;
  cpu?: string; // taskset -c list; '' or undefined = not pinned
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  logFile?: string; // stdout+stderr go here (appended); otherwise ignored
  captureStdout?: boolean; // pipe stdout (for the load generator)
}

export function spawnTracked(cmd: string, args: string[], opts: SpawnOpts): Tracked {
  installHandlers();
  let file = cmd;
  let argv = args;
  if (opts.cpu) {
    file = 'taskset';
    argv = ['-c', opts.cpu, cmd, ...args];
  }
  let fd: number | undefined;
  if (opts.logFile) fd = openSync(opts.logFile, 'a');
  const stdout = opts.captureStdout ? 'pipe' : fd ?? 'ignore';
  const child = spawn(file, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    // own process group, so that killing the group also takes nginx workers etc.
    detached: true,
    stdio: ['ignore', stdout, fd ?? 'ignore'],
  });
  if (fd !== undefined) closeSync(fd);
  if (child.pid === undefined) throw new Error(`could not start ${opts.name} (${cmd})`);
  const t: Tracked = {
    name: opts.name,
    pid: child.pid,
    child,
    dead: false,
    logFile: opts.logFile,
    exited: new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        t.dead = true;
        tracked.delete(t);
        resolve(code ?? (signal ? -1 : null));
      });
      child.on('error', () => {
        t.dead = true;
        tracked.delete(t);
        resolve(-1);
      });
    }),
  };
  tracked.add(t);
  return t;
}

function signalGroup(t: Tracked, sig: NodeJS.Signals): void {
  try {
    process.kill(-t.pid, sig);
  } catch {
    try {
      process.kill(t.pid, sig);
    } catch {
      /* already gone */
    }
  }
}

function signalLeader(t: Tracked, sig: NodeJS.Signals): void {
  try {
    process.kill(t.pid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * SIGTERM to the process we started (nginx's master then stops and reaps its own workers, so no
 * zombies are left behind), then SIGKILL to its whole process group after `graceMs`.
 */
export async function stop(t: Tracked, graceMs = 3000): Promise<void> {
  if (t.dead) return;
  signalLeader(t, 'SIGTERM');
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
  if ((await Promise.race([t.exited, timer])) === 'timeout') {
    signalGroup(t, 'SIGKILL');
    await t.exited;
  }
  // anything of its group still around (a worker that outlived its master)
  signalGroup(t, 'SIGKILL');
}

export async function stopAll(): Promise<void> {
  await Promise.all([...tracked].map((t) => stop(t)));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** On exit we cannot await: SIGTERM the leaders, wait synchronously (≤ 3 s), SIGKILL the rest. */
function killAllSync(): void {
  const all = [...tracked];
  tracked.clear();
  for (const t of all) signalLeader(t, 'SIGTERM');
  const sab = new Int32Array(new SharedArrayBuffer(4));
  const until = Date.now() + 3000;
  // a zombie (exited, not yet reaped by us) still answers kill(pid, 0): check /proc state too
  const running = (pid: number) => {
    if (!alive(pid)) return false;
    try {
      const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) !== 'Z';
    } catch {
      return false;
    }
  };
  while (Date.now() < until && all.some((t) => running(t.pid))) Atomics.wait(sab, 0, 0, 50);
  for (const t of all) signalGroup(t, 'SIGKILL');
}

const exitHooks: Array<() => void> = [];
/** Synchronous cleanup to run on any exit (temp dirs). */
export function onExit(fn: () => void): void {
  exitHooks.push(fn);
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    killAllSync();
    for (const h of exitHooks.splice(0)) {
      try {
        h();
      } catch {
        /* best effort */
      }
    }
  });
  process.on('unhandledRejection', (e) => {
    process.stderr.write(`bench: unhandled rejection: ${(e as Error)?.stack ?? e}\n`);
    process.exit(1);
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping all benchmark processes\n`);
      process.exit(130);
    });
  }
}

// ---------------------------------------------------------------- /proc readers

/** The process and all its descendants (through /proc/PID/task/TID/children). */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    out.push(p);
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        const kids = readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8').trim();
        if (kids) for (const k of kids.split(/\s+/)) stack.push(Number(k));
      } catch {
        /* raced with exit */
      }
    }
  }
  return out;
}

let clkTck = 0;
function ticksPerSecond(): number {
  if (!clkTck) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    clkTck = Number(r.stdout?.trim()) || 100;
  }
  return clkTck;
}

/** User and system CPU seconds of one process (all its threads). */
function cpuSecondsOf(pid: number): { user: number; sys: number } {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // after the comm field: state is f[0]; utime = field 14 → f[11], stime = 15 → f[12]
    return { user: Number(f[11]) / ticksPerSecond(), sys: Number(f[12]) / ticksPerSecond() };
  } catch {
    return { user: 0, sys: 0 };
  }
}

/**
 * CPU seconds consumed by a process tree (threads included: worker threads count), as user and
 * system (kernel) seconds: a proxy's system time is mostly its syscalls
 * and the loopback TCP work they do, the same for every proxy making the same syscalls; its
 * user time is its own code.
 */
export function treeCpuSplit(pid: number): { user: number; sys: number } {
  let user = 0;
  let sys = 0;
  for (const p of processTree(pid)) {
    const c = cpuSecondsOf(p);
    user += c.user;
    sys += c.sys;
  }
  return { user, sys };
}

function statusKb(pid: number, key: string): number {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Sum of VmRSS over the process tree, in kB. */
export function treeRssKb(pid: number): number {
  let sum = 0;
  for (const p of processTree(pid)) sum += statusKb(p, 'VmRSS');
  return sum;
}

/** Samples tree RSS every `everyMs` until stopped; returns the peak (kB). */
export function rssSampler(pid: number, everyMs = 200): { stop(): number } {
  let peak = treeRssKb(pid);
  const timer = setInterval(() => {
    const v = treeRssKb(pid);
    if (v > peak) peak = v;
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      const v = treeRssKb(pid);
      if (v > peak) peak = v;
      return peak;
    },
  };
}

/** Pin the calling process (the benchmark driver) so it does not steal the proxy's core. */
export function pinSelf(cpu: string): void {
  spawnSync('taskset', ['-apc', cpu, String(process.pid)], { stdio: 'ignore' });
}

/** Busy and total jiffies of one CPU from /proc/stat (busy = everything but idle + iowait). */
export function cpuJiffies(cpu: string): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${cpu} `));
    if (!line) return null;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}
