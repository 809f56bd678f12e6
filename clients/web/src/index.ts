// The presence-node web client: one device's session over the web listener's WebSocket.
export {
  PresenceClient,
  PresenceError,
  SUBPROTOCOL,
  sessionUrl,
  type ConnectedEvent,
  type ConnectingEvent,
  type ConnectionState,
  type DisconnectedEvent,
  type PresenceClientEvents,
  type PresenceClientOptions,
  type PresenceErrorKind,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { describeClose, grpcCodeOf, isFatalClose } from "./close-codes.js";
export { PresenceView, fromWire, type UserPresence } from "./view.js";
export { statusName, chosenStatus, type ChosenStatus, type StatusName } from "./status.js";
export * as wire from "./gen/presence/v1/presence_pb.js";
