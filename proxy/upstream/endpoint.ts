import { UpstreamPool } from './pool.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';

export interface PoolOptions {
  connections: number;
  keepAliveTimeoutMs: number;
  connectMs: number;
}

/**
 * Runtime state of one upstream address, shared by every route table that names it:
 * the connection pool (berth's own client, pool.ts), the circuit breaker, in-flight and request counters.
 * Keyed by address so pools and breaker state survive route-table swaps.
 */
export class Endpoint {
  readonly origin: string;
  pool: UpstreamPool | null = null;
  inflight = 0;
  requests = 0;
  failures = 0;
  readonly breaker: CircuitBreaker;
  /** generation of the last table that referenced this endpoint */
  generation = 0;
  /** targets of the serving table naming it (a table patched by a delta retires it at zero) */
  refs = 0;
  private connectMs: number;

  constructor(readonly address: string, threshold: number, openMs: number, private poolOpts: PoolOptions) {
    this.origin = 'http://' + address;
    this.breaker = new CircuitBreaker(threshold, openMs);
    this.connectMs = poolOpts.connectMs;
  }

  configure(threshold: number, openMs: number, connectMs: number): void {
    this.breaker.threshold = threshold;
    this.breaker.openMs = openMs;
    if (connectMs !== this.connectMs) {
      // applies to connections opened from now on
      this.connectMs = connectMs;
      if (this.pool !== null) this.pool.connectTimeoutMs = connectMs;
    }
  }

  getPool(): UpstreamPool {
    let p = this.pool;
    if (p === null) {
      p = new UpstreamPool(this.address, {
        connections: this.poolOpts.connections,
        keepAliveTimeoutMs: this.poolOpts.keepAliveTimeoutMs,
        connectMs: this.connectMs,
      });
      this.pool = p;
    }
    return p;
  }

  /** Close the pool gracefully: queued and in-flight requests finish first. */
  async close(): Promise<void> {
    const p = this.pool;
    this.pool = null;
    if (p) await p.close().catch(() => {});
  }
}

/** Address → Endpoint registry living for the whole process. */
export class EndpointRegistry {
  readonly byAddress = new Map<string, Endpoint>();
  /** Endpoints no table names any more but with requests still in flight (reported as draining). */
  readonly draining = new Map<string, Endpoint>();
  constructor(private poolOpts: PoolOptions) {}

  get(address: string, threshold: number, openMs: number, connectMs: number, generation: number): Endpoint {
    let ep = this.byAddress.get(address);
    if (ep === undefined) {
      ep = this.draining.get(address);
      if (ep !== undefined) {
        // back in a table before it drained: keep its pool and counters
        this.draining.delete(address);
        this.byAddress.set(address, ep);
      }
    }
    if (ep === undefined) {
      ep = new Endpoint(address, threshold, openMs, { ...this.poolOpts, connectMs });
      this.byAddress.set(address, ep);
    } else {
      ep.configure(threshold, openMs, connectMs);
    }
    ep.generation = generation;
    ep.refs++;
    return ep;
  }

  /** A whole table is compiled next: every endpoint's count of targets starts over. */
  recount(): void {
    for (const ep of this.byAddress.values()) ep.refs = 0;
  }

  /** A target naming `ep` left the table (patched by a delta): no target left, it drains. */
  release(ep: Endpoint): void {
    if (--ep.refs > 0 || this.byAddress.get(ep.address) !== ep) return;
    this.byAddress.delete(ep.address);
    this.draining.set(ep.address, ep);
  }

  /**
   * Endpoints no table references any more: closed at once when idle, otherwise kept (and
   * reported as draining) until their in-flight requests finish.
   */
  sweep(generation: number): void {
    for (const [addr, ep] of this.byAddress) {
      if (ep.generation !== generation) {
        this.byAddress.delete(addr);
        this.draining.set(addr, ep);
      }
    }
    this.pruneDraining();
  }

  /** Close drained endpoints' pools. Cheap; called on sweeps and on every stats snapshot. */
  pruneDraining(): void {
    for (const [addr, ep] of this.draining) {
      if (ep.inflight <= 0) {
        this.draining.delete(addr);
        void ep.close();
      }
    }
  }

  async closeAll(): Promise<void> {
    const all = [...this.byAddress.values(), ...this.draining.values()];
    this.byAddress.clear();
    this.draining.clear();
    await Promise.all(all.map((e) => e.close()));
  }
}
