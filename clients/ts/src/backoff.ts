/** How reconnect attempts are spaced. */
export interface ReconnectOptions {
  /** Delay scale of the first retry, ms (default 250). */
  initialDelayMs: number;
  /** Cap of any delay, ms (default 30 000). */
  maxDelayMs: number;
  /**
   * Give up after this many attempts in a row that never opened (default
   * 10). A browser cannot see why a handshake failed (401, 403, 409 and 503
   * all look like a close 1006 before open), so these are retried too, and
   * this bounds them.
   */
  maxFailures: number;
}

export const DEFAULT_RECONNECT: ReconnectOptions = {
  initialDelayMs: 250,
  maxDelayMs: 30_000,
  maxFailures: 10,
};

/**
 * Exponential backoff with full jitter: a uniformly random delay in
 * `[0, min(maxDelayMs, initialDelayMs * 2^failures))`, so that clients
 * dropped together do not come back together. `failures` is the number of
 * attempts in a row that failed (0 right after an open connection closed).
 */
export function backoffDelay(
  failures: number,
  o: Pick<ReconnectOptions, "initialDelayMs" | "maxDelayMs">,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(o.maxDelayMs, o.initialDelayMs * 2 ** Math.min(failures, 30));
  return Math.floor(random() * ceiling);
}
