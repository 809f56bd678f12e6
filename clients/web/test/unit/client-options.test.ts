// What the client checks before any socket: URL forms, identity, status choices, close codes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PresenceClient, sessionUrl } from "../../src/client.js";
import { isFatalClose, grpcCodeOf } from "../../src/close-codes.js";

test("session URL forms", () => {
  assert.equal(sessionUrl("http://127.0.0.1:8080", undefined, "alice"), "ws://127.0.0.1:8080/v1/session?user_id=alice");
  assert.equal(sessionUrl("https://x.example", "t.k.n"), "wss://x.example/v1/session?access_token=t.k.n");
  assert.equal(sessionUrl("ws://h:1/v1/session", undefined, "a b&c"), "ws://h:1/v1/session?user_id=a+b%26c");
  assert.throws(() => sessionUrl("ftp://h/"), TypeError);
});

test("exactly one identity, and a WebSocket implementation, are required", () => {
  const WebSocket = class {} as never;
  assert.throws(() => new PresenceClient({ url: "ws://h/", WebSocket }), /exactly one identity/);
  assert.throws(() => new PresenceClient({ url: "ws://h/", WebSocket, userId: "a", token: "t" }), /exactly one identity/);
  if (!("WebSocket" in globalThis)) {
    assert.throws(() => new PresenceClient({ url: "ws://h/", userId: "a" }), /no WebSocket implementation/);
  }
});

test("offline and unknown statuses and over-long text are refused before sending", () => {
  const WebSocket = class {} as never;
  const c = new PresenceClient({ url: "ws://h/", WebSocket, userId: "a", autoStart: false });
  assert.throws(() => c.setStatus("offline" as never), /offline is derived/);
  assert.throws(() => c.setStatus("sleeping" as never), RangeError);
  assert.throws(() => c.setStatus("busy", "é".repeat(129)), /258 bytes/);
  c.setStatus("busy", "é".repeat(128));
});

test("fatal close codes stop reconnecting; transient ones do not", () => {
  for (const code of [4016, 4003, 4007]) assert.ok(isFatalClose(code), String(code));
  for (const code of [1000, 1001, 1006, 1011, 4004, 4008, 4014]) assert.ok(!isFatalClose(code), String(code));
  assert.equal(grpcCodeOf(4016), "UNAUTHENTICATED");
  assert.equal(grpcCodeOf(4014), "UNAVAILABLE");
  assert.equal(grpcCodeOf(1006), undefined);
});
