/** Shared config for the Node peer proxies: same Host-based routing as the berth route file. */
export interface PeerConfig {
  port: number;
  /** upstream for every host but the round-robin one */
  single: string;
  /** round robin set, used for requests whose Host is `rrHost` */
  rr: string[];
  rrHost: string;
}

export function peerConfig(): PeerConfig {
  const port = Number(process.env.BENCH_PORT);
  const ups = (process.env.BENCH_UPSTREAMS ?? '').split(',').filter(Boolean);
  if (!port || ups.length === 0) {
    process.stderr.write('peer: BENCH_PORT and BENCH_UPSTREAMS (host:port,...) are required\n');
    process.exit(2);
  }
  return { port, single: ups[0], rr: ups, rrHost: process.env.BENCH_RR_HOST ?? 'rr.bench.local' };
}

/** Returns a function host → upstream address, round robin for the rr host. */
export function router(cfg: PeerConfig): (host: string | undefined) => string {
  let i = 0;
  return (host) => {
    if (host === cfg.rrHost) {
      const a = cfg.rr[i];
      i = (i + 1) % cfg.rr.length;
      return a;
    }
    return cfg.single;
  };
}
