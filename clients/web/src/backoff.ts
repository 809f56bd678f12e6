// When to reconnect after a failed or lost session: jittered exponential backoff with a
// cap, reset once a session has stayed up long enough to count as healthy. Pure: the time
// and the random source are passed in, so tests need no clock.

export interface BackoffOptions {
  /** The first retry's upper bound [500]. */
  initialMs?: number;
  /** No retry waits longer than this [30000]. */
  maxMs?: number;
  /** Growth per failed attempt [2]. */
  factor?: number;
  /** A session that lasted this long resets the backoff [10000]. */
  healthyAfterMs?: number;
}

/**
 * "Equal jitter": attempt n waits a random time in [b/2, b] where b = min(max, initial *
 * factor^n). Half the wait is random so a fleet of clients dropped at once by a node restart
 * does not come back in one burst; the other half keeps retries from hammering a node that is
 * still down.
 */
export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
  readonly healthyAfterMs: number;
  #attempt = 0;
  #openedAtMs: number | undefined;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 500;
    this.maxMs = options.maxMs ?? 30_000;
    this.factor = options.factor ?? 2;
    this.healthyAfterMs = options.healthyAfterMs ?? 10_000;
    if (!(this.initialMs > 0) || !(this.maxMs >= this.initialMs) || !(this.factor >= 1)) {
      throw new RangeError("backoff needs 0 < initialMs <= maxMs and factor >= 1");
    }
  }

  /** Failed attempts since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The upper bound of the next wait, before jitter. */
  ceilingMs(): number {
    return Math.min(this.maxMs, this.initialMs * this.factor ** this.#attempt);
  }

  /** The wait before the next attempt; `random` returns a number in [0, 1). */
  next(random: () => number): number {
    const ceiling = this.ceilingMs();
    this.#attempt += 1;
    const r = Math.min(Math.max(random(), 0), 1);
    return Math.round(ceiling / 2 + (ceiling / 2) * r);
  }

  /** A session was established (welcome received) at `nowMs`. */
  opened(nowMs: number): void {
    this.#openedAtMs = nowMs;
  }

  /** The session ended at `nowMs`: a healthy one resets the backoff. */
  closed(nowMs: number): void {
    if (this.#openedAtMs !== undefined && nowMs - this.#openedAtMs >= this.healthyAfterMs) {
      this.reset();
    }
    this.#openedAtMs = undefined;
  }

  reset(): void {
    this.#attempt = 0;
  }
}
