// One presence device over the web listener's WebSocket (`GET /v1/session`, subprotocol
// `presence.v1.proto`: one binary ClientFrame / ServerFrame per message). It keeps the
// session up (reconnects with backoff, honours `Reconnect` frames, heartbeats at the
// welcome's interval), re-sends the own status and the watched users after every
// reconnect, and merges what the node says into a view that never goes back a version.
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ClientFrameSchema,
  ErrorCode,
  ServerFrameSchema,
  type ServerFrame,
  type Welcome,
} from "./gen/presence/v1/presence_pb.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { describeClose, grpcCodeOf, isFatalClose } from "./close-codes.js";
import { Emitter } from "./emitter.js";
import { chosenStatus, type ChosenStatus } from "./status.js";
import { fromWire, PresenceView, type UserPresence } from "./view.js";

export const SUBPROTOCOL = "presence.v1.proto";

/** The parts of the WebSocket API the client uses: the browser's, or `ws` from npm. */
// The handlers take `any` because the implementations' event types differ (DOM events,
// `ws`'s own classes) and handler properties are checked contravariantly; the client reads
// only `data`, `code`, `reason` and `message` from them.
/* eslint-disable @typescript-eslint/no-explicit-any */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/* eslint-enable @typescript-eslint/no-explicit-any */

export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface PresenceClientOptions {
  /**
   * The node's web listener: `ws(s)://host:port/v1/session`, or just `http(s)://host:port`
   * / `ws(s)://host:port` (the session path is added). Relative URLs resolve against the
   * page's location.
   */
  url: string;
  /** Identity in `jwt` mode: sent as the `access_token` query parameter. */
  token?: string;
  /** Identity in `insecure` mode: sent as the `user_id` query parameter. */
  userId?: string;
  /** The device label, e.g. "web" [web]. */
  device?: string;
  /** The status to start with (sent in `hello`, so the device never flashes another). */
  status?: ChosenStatus;
  statusText?: string;
  /** The WebSocket implementation [globalThis.WebSocket]; pass `ws`'s in Node 20. */
  WebSocket?: WebSocketConstructor;
  backoff?: BackoffOptions;
  /** Random source in [0, 1) for the backoff jitter [Math.random]. */
  random?: () => number;
  /** Start connecting at once [true]; otherwise call `start()`. */
  autoStart?: boolean;
}

export interface ConnectedEvent {
  sessionId: string;
  userId: string;
  nodeId: string;
  heartbeatIntervalMs: number;
  sessionTtlMs: number;
  maxSubscriptions: number;
}

export interface ConnectingEvent {
  /** Attempts since the last established session, starting at 1. */
  attempt: number;
  url: string;
}

export interface DisconnectedEvent {
  /** The WebSocket close code (1006 when the connection was lost without a close). */
  code: number;
  /** Why, in words: the close reason, or what the client saw. */
  reason: string;
  /** The node asked for this (a `Reconnect` frame, e.g. while draining). */
  requested: boolean;
  /** A session had been established on the socket that ended (false: an attempt failed). */
  established: boolean;
  /** Reconnecting stops: the node refused this identity or device for good. */
  fatal: boolean;
  /** When the client will try again, unless stopped or fatal. */
  retryInMs: number | undefined;
}

export type PresenceErrorKind =
  /** The node refused one frame (an `Error` frame); the session goes on. */
  | "frame"
  /** The session ended with a close code that stops reconnecting. */
  | "fatal"
  /** The node sent something this client cannot read. */
  | "protocol";

export class PresenceError extends Error {
  readonly kind: PresenceErrorKind;
  /** `ERROR_CODE_*` for frame errors, the gRPC code name for fatal closes. */
  readonly code: string;
  readonly ref: bigint | undefined;
  readonly closeCode: number | undefined;
  /** For a refused `subscribe`: the ids that are therefore not watched. */
  readonly userIds: readonly string[];

  constructor(
    kind: PresenceErrorKind,
    code: string,
    message: string,
    extra: { ref?: bigint; closeCode?: number; userIds?: readonly string[] } = {},
  ) {
    super(message);
    this.name = "PresenceError";
    this.kind = kind;
    this.code = code;
    this.ref = extra.ref;
    this.closeCode = extra.closeCode;
    this.userIds = extra.userIds ?? [];
  }
}

export interface PresenceClientEvents {
  /** A watched user's view changed (never to an older version). */
  presence: UserPresence;
  connecting: ConnectingEvent;
  /** A session is established (welcome received). */
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: PresenceError;
}

export type ConnectionState = "idle" | "connecting" | "connected" | "waiting" | "stopped" | "failed";

/** The node's limits (API.md "Semantics" 8): ids per frame and bytes of status text. */
const MAX_IDS_PER_FRAME = 1000;
const MAX_STATUS_TEXT_BYTES = 256;
const DEFAULT_HEARTBEAT_MS = 10_000;

type Pending =
  | { kind: "subscribe"; userIds: string[] }
  | { kind: "unsubscribe"; userIds: string[] }
  | { kind: "set_status"; status: ChosenStatus; text: string };

export class PresenceClient extends Emitter<PresenceClientEvents> {
  readonly #url: string;
  readonly #device: string;
  readonly #WebSocket: WebSocketConstructor;
  readonly #random: () => number;
  readonly #backoff: Backoff;
  readonly #view = new PresenceView();
  /** Users this client wants to watch; re-subscribed after every reconnect. */
  readonly #watched = new Set<string>();
  /** The status the app chose (re-sent in every hello); undefined: keep the stored one. */
  #status: { status: ChosenStatus; text: string } | undefined;
  /** The last status the node acknowledged, to fall back to when a change is refused. */
  #ackedStatus: { status: ChosenStatus; text: string } | undefined;
  /** What the current session's hello carried. */
  #helloStatus: { status: ChosenStatus; text: string } | undefined;
  #state: ConnectionState = "idle";
  #ws: WebSocketLike | undefined;
  #welcome: Welcome | undefined;
  #nextRef = 1n;
  readonly #pending = new Map<bigint, Pending>();
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #lastServerFrameAt = 0;
  /** Set by a `Reconnect` frame: wait this long before the next attempt. */
  #requestedDelayMs: number | undefined;
  #requestedReason = "";
  #attempts = 0;
  /** Whether the socket that is ending had carried a session (its welcome arrived). */
  #established = false;

  constructor(options: PresenceClientOptions) {
    super();
    const ctor =
      options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ??
      undefined;
    if (ctor === undefined) {
      throw new TypeError(
        "no WebSocket implementation: pass options.WebSocket (e.g. `import WebSocket from \"ws\"` in Node 20)",
      );
    }
    if ((options.token === undefined) === (options.userId === undefined)) {
      throw new TypeError("give exactly one identity: token (jwt mode) or userId (insecure mode)");
    }
    this.#WebSocket = ctor;
    this.#url = sessionUrl(options.url, options.token, options.userId);
    this.#device = options.device ?? "web";
    this.#random = options.random ?? Math.random;
    this.#backoff = new Backoff(options.backoff);
    if (options.status !== undefined) {
      this.#status = checkedStatus(options.status, options.statusText ?? "");
    }
    if (options.autoStart ?? true) {
      this.start();
    }
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The current session's welcome, while connected. */
  get session(): ConnectedEvent | undefined {
    return this.#welcome === undefined ? undefined : connectedEvent(this.#welcome);
  }

  /** The latest view of a watched user. */
  presence(userId: string): UserPresence | undefined {
    return this.#view.get(userId);
  }

  /** The latest views of all watched users. */
  presences(): UserPresence[] {
    return this.#view.all().filter((p) => this.#watched.has(p.userId) || p.denied);
  }

  watching(): string[] {
    return [...this.#watched];
  }

  /** Opens the session (again, after `stop()` or a fatal end). */
  start(): void {
    if (this.#state === "connecting" || this.#state === "connected" || this.#state === "waiting") {
      return;
    }
    this.#backoff.reset();
    this.#attempts = 0;
    this.#connect();
  }

  /** Ends the session with a clean close (watchers see this device leave at once). */
  stop(): void {
    const wasLive = this.#ws !== undefined;
    const established = this.#established;
    this.#established = false;
    this.#state = "stopped";
    this.#clearTimers();
    const ws = this.#ws;
    this.#detach();
    if (ws !== undefined) {
      try {
        ws.close(1000, "client stopped");
      } catch {
        // Already closing: nothing more to do.
      }
    }
    if (wasLive) {
      this.emit("disconnected", {
        code: 1000,
        reason: "client stopped",
        requested: false,
        established,
        fatal: false,
        retryInMs: undefined,
      });
    }
  }

  /** Starts watching users; the view fills from the node's snapshot. */
  watch(userIds: Iterable<string>): void {
    const fresh = [...new Set(userIds)].filter((id) => !this.#watched.has(id));
    for (const id of fresh) this.#watched.add(id);
    if (this.#state === "connected" && fresh.length > 0) this.#subscribe(fresh);
  }

  /** Stops watching users and forgets their views. */
  unwatch(userIds: Iterable<string>): void {
    const gone = [...new Set(userIds)].filter((id) => this.#watched.has(id));
    for (const id of gone) {
      this.#watched.delete(id);
      this.#view.delete(id);
    }
    if (this.#state === "connected" && gone.length > 0) {
      for (const chunk of chunks(gone, MAX_IDS_PER_FRAME)) {
        this.#send({ case: "unsubscribe", value: { userIds: chunk } }, {
          kind: "unsubscribe",
          userIds: chunk,
        });
      }
    }
  }

  /** Chooses the user's status (all devices); kept and re-sent across reconnects. */
  setStatus(status: ChosenStatus, text = ""): void {
    const chosen = checkedStatus(status, text);
    this.#status = chosen;
    if (this.#state === "connected") {
      this.#send({ case: "setStatus", value: { status: chosenStatus(chosen.status), statusText: chosen.text } },
        { kind: "set_status", ...chosen },
      );
    }
  }

  #connect(): void {
    this.#retryTimer = undefined;
    this.#state = "connecting";
    this.#attempts += 1;
    this.emit("connecting", { attempt: this.#attempts, url: redactedUrl(this.#url) });
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(this.#url, [SUBPROTOCOL]);
    } catch (err) {
      this.#ended(1006, `cannot open the WebSocket: ${String(err)}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    let failure = "";
    ws.onopen = () => {
      if (ws.protocol !== SUBPROTOCOL) {
        this.#abandon(1002, `the server chose subprotocol "${ws.protocol}", not ${SUBPROTOCOL}`);
        return;
      }
      this.#lastServerFrameAt = Date.now();
      this.#helloStatus = this.#status;
      const hello =
        this.#status === undefined
          ? { device: this.#device, statusText: "" }
          : {
              device: this.#device,
              status: chosenStatus(this.#status.status),
              statusText: this.#status.text,
            };
      this.#send({ case: "hello", value: hello });
    };
    ws.onmessage = (event: { data: unknown }) => this.#received(event.data);
    ws.onerror = (event: unknown) => {
      // Browsers say nothing useful here (the close follows); `ws` names the HTTP answer
      // of a refused upgrade, which tells a bad identity (401) or Origin (403) apart.
      failure = errorText(event);
    };
    ws.onclose = (event: { code: number; reason: string }) => {
      if (this.#ws !== ws) return;
      this.#detach();
      const refused = /Unexpected server response: (401|403)\b/.exec(failure);
      if (refused !== null) {
        const code = refused[1] === "401" ? 4016 : 4007;
        this.#ended(code, `upgrade refused with HTTP ${refused[1]}`);
        return;
      }
      this.#ended(event.code, event.reason || failure || describeClose(event.code));
    };
  }

  #received(data: unknown): void {
    this.#lastServerFrameAt = Date.now();
    let frame: ServerFrame;
    try {
      frame = fromBinary(ServerFrameSchema, bytesOf(data));
    } catch (err) {
      this.emit("error", new PresenceError("protocol", "DECODE", `unreadable server frame: ${String(err)}`));
      return;
    }
    const kind = frame.kind;
    switch (kind.case) {
      case "welcome":
        this.#welcomed(kind.value);
        break;
      case "snapshot": {
        this.#pending.delete(kind.value.ref);
        const denied = new Set(kind.value.deniedUserIds);
        for (const p of kind.value.presences) this.#merge(fromWire(p, denied.has(p.userId)));
        break;
      }
      case "update": {
        for (const p of kind.value.presences) {
          this.#merge(fromWire(p, kind.value.deniedUserIds.includes(p.userId)));
        }
        // Their last update: the node no longer watches them for this session.
        for (const id of kind.value.deniedUserIds) this.#watched.delete(id);
        break;
      }
      case "ack": {
        const pending = this.#pending.get(kind.value.ref);
        this.#pending.delete(kind.value.ref);
        if (pending?.kind === "set_status") {
          this.#ackedStatus = { status: pending.status, text: pending.text };
        }
        break;
      }
      case "error":
        this.#refused(kind.value.ref, kind.value.code, kind.value.message);
        break;
      case "reconnect": {
        this.#requestedDelayMs = Number(kind.value.retryAfterMs);
        this.#requestedReason = kind.value.reason || "the node asked to reconnect";
        // Leave now; the delay runs from here. While draining the node lets the session
        // linger, so watchers see no change if this device is back within the grace.
        this.#abandon(1000, `reconnect requested: ${this.#requestedReason}`);
        break;
      }
      case "heartbeatAck":
      case undefined:
        break;
    }
  }

  #welcomed(welcome: Welcome): void {
    this.#welcome = welcome;
    this.#established = true;
    this.#state = "connected";
    this.#attempts = 0;
    this.#backoff.opened(Date.now());
    this.#ackedStatus = this.#helloStatus;
    const interval = Number(welcome.heartbeatIntervalMs) || DEFAULT_HEARTBEAT_MS;
    const ttl = Number(welcome.sessionTtlMs) || 3 * interval;
    this.#heartbeatTimer = setInterval(() => {
      // Nothing heard for a whole TTL (not even the last heartbeat's ack): the
      // connection is dead even if the socket has not noticed yet.
      if (Date.now() - this.#lastServerFrameAt > ttl) {
        this.#abandon(1006, "no frame from the node within the session TTL");
        return;
      }
      this.#send({ case: "heartbeat", value: {} });
    }, interval);
    this.emit("connected", connectedEvent(welcome));
    // Chosen while the hello was on its way: send it now.
    const chosen = this.#status;
    if (chosen !== undefined && chosen !== this.#helloStatus) this.setStatus(chosen.status, chosen.text);
    if (this.#watched.size > 0) this.#subscribe([...this.#watched]);
  }

  #subscribe(userIds: string[]): void {
    for (const chunk of chunks(userIds, MAX_IDS_PER_FRAME)) {
      this.#send({ case: "subscribe", value: { userIds: chunk } }, {
        kind: "subscribe",
        userIds: chunk,
      });
    }
  }

  #merge(next: UserPresence): void {
    if (!this.#watched.has(next.userId)) return; // unwatched meanwhile: a late frame
    const changed = this.#view.apply(next);
    if (changed !== undefined) this.emit("presence", changed);
  }

  #refused(ref: bigint, code: ErrorCode, message: string): void {
    const pending = this.#pending.get(ref);
    this.#pending.delete(ref);
    let userIds: string[] = [];
    if (pending?.kind === "subscribe") {
      // Refused whole: none of these are watched, and re-sending them would fail again.
      userIds = pending.userIds;
      for (const id of userIds) this.#watched.delete(id);
    } else if (pending?.kind === "set_status") {
      this.#status = this.#ackedStatus;
    }
    const name = `ERROR_CODE_${ErrorCode[code] ?? code}`;
    const what = pending === undefined ? "frame" : pending.kind;
    this.emit("error", new PresenceError("frame", name, `${what} refused: ${message}`, { ref, userIds }));
  }

  #send(kind: MessageInitShape<typeof ClientFrameSchema>["kind"], pending?: Pending): void {
    const ws = this.#ws;
    if (ws === undefined) return;
    const ref = this.#nextRef++;
    if (pending !== undefined) this.#pending.set(ref, pending);
    try {
      ws.send(toBinary(ClientFrameSchema, create(ClientFrameSchema, { ref, kind })));
    } catch (err) {
      this.#abandon(1006, `send failed: ${String(err)}`);
    }
  }

  /** Gives up on the current socket at once (closing it if it still can be). */
  #abandon(code: number, reason: string): void {
    const ws = this.#ws;
    this.#detach();
    if (ws !== undefined) {
      try {
        // No reason text: a close reason over 123 bytes would throw instead of closing.
        ws.close(1000);
      } catch {
        // A socket that cannot close is gone anyway.
      }
    }
    this.#ended(code, reason);
  }

  #detach(): void {
    const ws = this.#ws;
    if (ws !== undefined) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onerror = null;
      ws.onclose = null;
    }
    this.#ws = undefined;
    this.#welcome = undefined;
    this.#pending.clear();
    if (this.#heartbeatTimer !== undefined) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
  }

  /** The socket is gone: decide whether and when to try again, and tell the app. */
  #ended(code: number, reason: string): void {
    if (this.#state === "stopped") return;
    this.#backoff.closed(Date.now());
    const requested = this.#requestedDelayMs !== undefined;
    const established = this.#established;
    this.#established = false;
    if (!requested && isFatalClose(code)) {
      this.#state = "failed";
      const grpc = grpcCodeOf(code) ?? describeClose(code);
      this.emit("error", new PresenceError("fatal", grpc, `session refused: ${reason}`, { closeCode: code }));
      this.emit("disconnected", { code, reason, requested, established, fatal: true, retryInMs: undefined });
      return;
    }
    let delay: number;
    if (requested) {
      delay = this.#requestedDelayMs ?? 0;
      this.#requestedDelayMs = undefined;
      this.#backoff.reset();
      this.#attempts = 0;
    } else {
      delay = this.#backoff.next(this.#random);
    }
    this.#state = "waiting";
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
    this.emit("disconnected", { code, reason, requested, established, fatal: false, retryInMs: delay });
  }

  #clearTimers(): void {
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    if (this.#heartbeatTimer !== undefined) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
  }
}

function connectedEvent(w: Welcome): ConnectedEvent {
  return {
    sessionId: w.sessionId,
    userId: w.userId,
    nodeId: w.nodeId,
    heartbeatIntervalMs: Number(w.heartbeatIntervalMs),
    sessionTtlMs: Number(w.sessionTtlMs),
    maxSubscriptions: w.maxSubscriptions,
  };
}

function checkedStatus(status: ChosenStatus, text: string): { status: ChosenStatus; text: string } {
  chosenStatus(status); // throws on offline or an unknown name
  const bytes = new TextEncoder().encode(text).length;
  if (bytes > MAX_STATUS_TEXT_BYTES) {
    throw new RangeError(`status text is ${bytes} bytes; the node takes at most ${MAX_STATUS_TEXT_BYTES}`);
  }
  return { status, text };
}

/** The session endpoint with the identity as a query parameter (browsers cannot set headers). */
export function sessionUrl(base: string, token?: string, userId?: string): string {
  const origin = (globalThis as { location?: { href: string } }).location?.href;
  const url = origin === undefined ? new URL(base) : new URL(base, origin);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(`the node's URL must be ws(s):// or http(s)://, got ${url.protocol}`);
  }
  if (url.pathname === "/" || url.pathname === "") url.pathname = "/v1/session";
  if (token !== undefined) url.searchParams.set("access_token", token);
  if (userId !== undefined) url.searchParams.set("user_id", userId);
  return url.toString();
}

/** The URL without the token, for events an app may log. */
function redactedUrl(url: string): string {
  const u = new URL(url);
  if (u.searchParams.has("access_token")) u.searchParams.set("access_token", "REDACTED");
  return u.toString();
}

function bytesOf(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    // `ws` may deliver a fragmented message as a list of buffers.
    const parts = data.map(bytesOf);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  throw new TypeError(`expected a binary message, got ${typeof data}`);
}

function errorText(event: unknown): string {
  if (event !== null && typeof event === "object") {
    const e = event as { message?: unknown; error?: unknown };
    if (typeof e.message === "string") return e.message;
    if (e.error instanceof Error) return e.error.message;
  }
  return "";
}

function* chunks<T>(items: T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
