import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Where ports are picked when the ephemeral range leaves room below it. */
const PICK_FROM = 10_000;
/** The ports this process was given last: not given again (each probe closes before it returns). */
const given: number[] = [];
const GIVEN_MAX = 256;

/**
 * The first port of the kernel's ephemeral range (Linux: ip_local_port_range), or 0 when unknown.
 * Read once per process.
 */
let ephemeralLow: number | undefined;
function ephemeralStart(): number {
  if (ephemeralLow === undefined) {
    try {
      const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').trim().split(/\s+/)[0]);
      ephemeralLow = Number.isInteger(low) && low > 0 && low <= 65535 ? low : 0;
    } catch {
      ephemeralLow = 0;
    }
  }
  return ephemeralLow;
}

/** Listen on `port` (0: any) and close again; the port it got, or null when it could not. */
function probe(host: string, port: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (port !== 0 && (e.code === 'EADDRINUSE' || e.code === 'EACCES')) resolve(null);
      else reject(e);
    });
    s.listen(port, host, () => {
      const a = s.address();
      const got = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(got));
    });
  });
}

/** A TCP port that was free a moment ago (bind to port 0, read it, close): for a long-lived listener. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return (await probe(host, 0))!;
}

/**
 * A TCP port that was free a moment ago, for a process a test or a benchmark starts now.
 *
 * Picked at random below the kernel's ephemeral range where it leaves room (10,000 up to it:
 * 10,000–32,767 on a default Linux), not by binding port 0: port 0 hands out a port of that very
 * range, from which every outgoing connection also takes its local port — under load (a proxy
 * opening upstream connections, tests making thousands of requests) one of them took such a port
 * between the pick and the listen now and then, and the listen failed. Below the range only
 * another process's pick, or a service started meanwhile on a fixed port, can collide; a port
 * this process was given lately is not given again. Without the range (not Linux), or with no
 * room below it, port 0. Not for long-lived listeners (the embedded PostgreSQL takes freePort()):
 * fixed-port services live in this range, and one started later would find its port taken.
 */
export async function freePortBelowEphemeral(host = '127.0.0.1'): Promise<number> {
  const low = ephemeralStart();
  let port: number | null = null;
  if (low > PICK_FROM + 1000) {
    for (let i = 0; i < 20 && port === null; i++) {
      const p = PICK_FROM + Math.floor(Math.random() * (low - PICK_FROM));
      if (given.includes(p)) continue;
      // noted before the probe: a pick made meanwhile (concurrent callers) must not take it too
      remember(p);
      port = await probe(host, p);
    }
  }
  if (port === null) remember((port = (await probe(host, 0))!));
  return port;
}

function remember(port: number): void {
  given.push(port);
  if (given.length > GIVEN_MAX) given.shift();
}
