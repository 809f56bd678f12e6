// WebSocket close codes of the web listener: a fatal end is 4000 + the gRPC status code
// (API.md "Browsers: the web listener"). Which of them make reconnecting pointless.

const GRPC_CODES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

export type GrpcCodeName = (typeof GRPC_CODES)[number];

/** The gRPC status a close code carries, if it is one of the 4000 + code range. */
export function grpcCodeOf(closeCode: number): GrpcCodeName | undefined {
  return closeCode >= 4000 && closeCode < 4000 + GRPC_CODES.length
    ? GRPC_CODES[closeCode - 4000]
    : undefined;
}

// Retrying cannot help: the identity or the client's own frames are wrong. Everything else
// (UNAVAILABLE while draining, DEADLINE_EXCEEDED after a stall, RESOURCE_EXHAUSTED, abnormal
// closes) is worth a reconnect with backoff.
const FATAL = new Set<number>([
  4003, // INVALID_ARGUMENT: a malformed first frame
  4007, // PERMISSION_DENIED
  4012, // UNIMPLEMENTED
  4016, // UNAUTHENTICATED
  1002, // protocol error
  1003, // unsupported data
  1007, // invalid payload
]);

export function isFatalClose(closeCode: number): boolean {
  return FATAL.has(closeCode);
}

/** A readable name for logs and the `disconnected` event. */
export function describeClose(closeCode: number): string {
  const grpc = grpcCodeOf(closeCode);
  if (grpc !== undefined) return grpc;
  switch (closeCode) {
    case 1000:
      return "normal closure";
    case 1001:
      return "going away";
    case 1006:
      return "connection lost";
    case 1011:
      return "server error";
    default:
      return `close code ${closeCode}`;
  }
}
