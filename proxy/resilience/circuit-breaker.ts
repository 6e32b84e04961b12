/**
 * Per-endpoint circuit breaker: CLOSED → OPEN after N consecutive failures → HALF_OPEN after
 * openMs (exactly one probe request admitted) → CLOSED on probe success, OPEN again on failure.
 * All bookkeeping is plain numbers; no timers, no allocation.
 *
 * The probe slot is released by whichever outcome the probe request reaches (success, failure,
 * neutral). As a last line of defence against a path that forgets to, a probe holds the slot for
 * at most PROBE_LEASE_MS: after that the next request may probe again, so a route can never stay
 * refused forever because of one lost probe.
 */
export const PROBE_LEASE_MS = 30_000;
export const CLOSED = 0;
export const OPEN = 1;
export const HALF_OPEN = 2;
export type BreakerState = typeof CLOSED | typeof OPEN | typeof HALF_OPEN;
export const STATE_NAMES = ['closed', 'open', 'half_open'] as const;

export class CircuitBreaker {
  state: BreakerState = CLOSED;
  consecutiveFailures = 0;
  openedAt = 0;
  probeInFlight = false;
  probeAt = 0;
  /** times the breaker went CLOSED/HALF_OPEN → OPEN */
  opens = 0;

  constructor(public threshold: number, public openMs: number) {}

  /** Can a request be sent now? Does not reserve the probe (see acquire). */
  admits(now: number): boolean {
    const s = this.state;
    if (s === CLOSED) return true;
    if (s === OPEN) return now - this.openedAt >= this.openMs;
    return !this.probeInFlight || now - this.probeAt >= PROBE_LEASE_MS;
  }

  /** Called when the picker selected this endpoint: reserves the single HALF_OPEN probe. */
  acquire(now: number): void {
    if (this.state === CLOSED) return;
    if (this.state === OPEN && now - this.openedAt >= this.openMs) this.state = HALF_OPEN;
    if (this.state === HALF_OPEN) {
      this.probeInFlight = true;
      this.probeAt = now;
    }
  }

  onSuccess(): void {
    this.consecutiveFailures = 0;
    if (this.state !== CLOSED) {
      this.state = CLOSED;
      this.probeInFlight = false;
    }
  }

  onFailure(now: number): void {
    this.consecutiveFailures++;
    if (this.state === HALF_OPEN || (this.state === CLOSED && this.consecutiveFailures >= this.threshold)) {
      this.state = OPEN;
      this.openedAt = now;
      this.probeInFlight = false;
      this.opens++;
    }
  }

  /** A request that neither succeeded nor failed (client gave up): release a held probe. */
  onNeutral(): void {
    if (this.state === HALF_OPEN) this.probeInFlight = false;
  }

  stateName(now: number): string {
    if (this.state === OPEN && now - this.openedAt >= this.openMs) return 'half_open';
    return STATE_NAMES[this.state];
  }
}
