import { LRUCache } from 'lru-cache';

/** A stored response: status 200, filtered headers (flat name/value list) and the whole body. */
export interface CachedResponse {
  headers: string[];
  body: Buffer;
  storedAt: number;
}

export interface FallbackCacheConfig {
  enabled: boolean;
  ttlMs: number;
  maxEntries: number;
  maxBytes: number;
}

/** Largest single body kept; bigger responses are streamed but never cached. */
export const MAX_ENTRY_BYTES = 1024 * 1024;

/**
 * Last successful GET response per host+path(+query) for one route, bounded by entries and bytes,
 * expiring after ttlMs. Served only when no endpoint can take a request.
 * Refreshes of a still-young entry are skipped (at most one per ttl/10, capped at 1 s) so the
 * hot path does not pay a copy per request for a response it already holds.
 */
export class FallbackCache {
  private lru: LRUCache<string, CachedResponse> | null = null;
  private readonly refreshMs: number;

  constructor(readonly config: FallbackCacheConfig) {
    this.refreshMs = Math.min(1000, Math.floor(config.ttlMs / 10));
  }

  private cache(): LRUCache<string, CachedResponse> {
    // Created lazily: a 10,000-route table must not allocate 10,000 caches up front.
    if (this.lru === null) {
      this.lru = new LRUCache<string, CachedResponse>({
        max: this.config.maxEntries,
        maxSize: this.config.maxBytes,
        sizeCalculation: (v, k) => v.body.length + k.length + 64 + v.headers.reduce((a, h) => a + h.length, 0),
        ttl: this.config.ttlMs,
        ttlAutopurge: false,
        allowStale: false,
      });
    }
    return this.lru;
  }

  /** the last key asked about while its entry was young (or just being captured), and when */
  private lastHost = '';
  private lastPath = '';
  private lastAt = -Infinity;

  /**
   * Should a fresh response for host + path (+ '\n' + encoding when the response varies on
   * Accept-Encoding: the key storeFallback uses) be captured? false while the entry is young. The
   * last plain key answered is remembered until its entry is due, so a route hammered on one path
   * does not pay a key and a lookup per response.
   */
  wants(host: string, path: string, vary: boolean, encoding: string, now: number): boolean {
    if (!this.config.enabled || this.config.ttlMs === 0) return false;
    if (!vary && now - this.lastAt < this.refreshMs && path === this.lastPath && host === this.lastHost) return false;
    let storedAt = -Infinity;
    if (this.lru !== null) {
      // peek: no recency update on the hot path (a capture's store() refreshes it)
      const e = this.lru.peek(vary ? host + path + '\n' + encoding : host + path);
      if (e !== undefined) storedAt = e.storedAt;
    }
    const young = now - storedAt < this.refreshMs;
    if (!vary) {
      // young until storedAt + refresh; a capture starting now is young from now
      this.lastHost = host;
      this.lastPath = path;
      this.lastAt = young ? storedAt : now;
    }
    return !young;
  }

  store(key: string, value: CachedResponse): void {
    if (value.body.length > MAX_ENTRY_BYTES || value.body.length > this.config.maxBytes) return;
    this.cache().set(key, value);
  }

  get(key: string): CachedResponse | undefined {
    if (this.lru === null) return undefined;
    return this.lru.get(key);
  }

  get size(): number {
    return this.lru === null ? 0 : this.lru.size;
  }

  get bytes(): number {
    return this.lru === null ? 0 : this.lru.calculatedSize;
  }

  sameConfig(c: FallbackCacheConfig): boolean {
    const a = this.config;
    return a.enabled === c.enabled && a.ttlMs === c.ttlMs && a.maxEntries === c.maxEntries && a.maxBytes === c.maxBytes;
  }
}
