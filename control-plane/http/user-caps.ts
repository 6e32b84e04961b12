/**
 * Counts of something each user holds (open streams, running queries) against a cap per user and
 * one for everyone, for the limits built on it (stream-limits.ts, heavy-queries.ts).
 */
export class UserCaps<K = number> {
  private readonly perUser = new Map<K, number>();
  private total = 0;

  constructor(readonly maxPerUser: number, readonly maxTotal: number) {}

  /** Held now (by one user, or in all). */
  count(userId?: K): number {
    return userId === undefined ? this.total : this.perUser.get(userId) ?? 0;
  }

  /**
   * Take one for `userId`, or throw what `refuse` makes of the cap that is full ('user' or
   * 'total'). Returns the release: idempotent, to call when the thing ends.
   */
  take(userId: K, refuse: (which: 'user' | 'total', held: number) => Error): () => void {
    const mine = this.perUser.get(userId) ?? 0;
    if (mine >= this.maxPerUser) throw refuse('user', mine);
    if (this.total >= this.maxTotal) throw refuse('total', this.total);
    this.perUser.set(userId, mine + 1);
    this.total++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      const n = (this.perUser.get(userId) ?? 1) - 1;
      if (n > 0) this.perUser.set(userId, n);
      else this.perUser.delete(userId);
    };
  }
}

/** One `T` per control plane, keyed by its HTTP server (shared by every plugin). */
export function perServer<T>(make: () => T): (app: { server: object }) => T {
  const byServer = new WeakMap<object, T>();
  return (app) => {
    let v = byServer.get(app.server);
    if (v === undefined) byServer.set(app.server, (v = make()));
    return v;
  };
}
