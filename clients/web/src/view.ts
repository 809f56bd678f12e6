// The per-user view a client shows: snapshots and updates merged by version, so it never
// goes back to an older state (API.md "Semantics" 4 and 5).
import type { Presence } from "./gen/presence/v1/presence_pb.js";
import { statusName, type StatusName } from "./status.js";

/** How one watched user looks to this client. */
export interface UserPresence {
  readonly userId: string;
  readonly status: StatusName;
  /** Empty when offline. */
  readonly statusText: string;
  /** Distinct device labels of the user's sessions, sorted; empty when offline. */
  readonly devices: readonly string[];
  /** Unix ms at which this visible status began. */
  readonly sinceMs: number;
  /** Unix ms at which the user last stopped being visibly online; 0 while online or never seen. */
  readonly lastSeenMs: number;
  /** Strictly increasing per user; 0 for a user the node does not know. */
  readonly version: bigint;
  /** The watch policy denies this viewer the user: shown offline, never updated. */
  readonly denied: boolean;
}

/** The app-facing form of a wire `Presence`. */
export function fromWire(p: Presence, denied = false): UserPresence {
  return {
    userId: p.userId,
    status: statusName(p.status),
    statusText: p.statusText,
    devices: [...p.devices],
    sinceMs: Number(p.sinceMs),
    lastSeenMs: Number(p.lastSeenMs),
    version: p.version,
    denied,
  };
}

/**
 * Latest known presence per user. An entry is replaced only by one with a higher version:
 * a snapshot answered after a newer update (a re-subscribe, a reconnect to another node),
 * a duplicate, or a stale frame leaves the view as it is.
 */
export class PresenceView {
  readonly #users = new Map<string, UserPresence>();

  /** Merges `next`; returns it when the view changed, undefined when it was not newer. */
  apply(next: UserPresence): UserPresence | undefined {
    const current = this.#users.get(next.userId);
    if (current !== undefined && next.version <= current.version) {
      return undefined;
    }
    this.#users.set(next.userId, next);
    return next;
  }

  get(userId: string): UserPresence | undefined {
    return this.#users.get(userId);
  }

  /** Forgets a user (no longer watched): a later subscription starts afresh. */
  delete(userId: string): boolean {
    return this.#users.delete(userId);
  }

  all(): UserPresence[] {
    return [...this.#users.values()];
  }
}
