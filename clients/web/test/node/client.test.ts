// The client against a real presence-node process over real sockets (`ws` from npm as the
// WebSocket in Node 20): a session seen by a second client, a node restart survived, a
// `Reconnect` frame honoured, versions never going back, fatal closes reported.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { PresenceClient, type PresenceClientEvents, type UserPresence } from "../../src/index.js";
import { eventually, freePort, NodeProcess } from "../support/node-process.js";

type Seen = { [K in keyof PresenceClientEvents]: Array<{ at: number; event: PresenceClientEvents[K] }> };

const clients: PresenceClient[] = [];
const nodes: NodeProcess[] = [];
after(async () => {
  for (const c of clients) c.stop();
  for (const n of nodes) await n.stop();
});

async function startNode(options: Parameters<typeof NodeProcess.start>[0] = {}): Promise<NodeProcess> {
  const node = await NodeProcess.start(options);
  nodes.push(node);
  return node;
}

function connect(node: NodeProcess | string, userId: string, extra: Partial<ConstructorParameters<typeof PresenceClient>[0]> = {}) {
  const client = new PresenceClient({
    url: typeof node === "string" ? node : node.url,
    userId,
    device: "node-test",
    WebSocket,
    backoff: { initialMs: 100, maxMs: 800 },
    ...extra,
  });
  clients.push(client);
  const seen: Seen = { presence: [], connecting: [], connected: [], disconnected: [], error: [] };
  for (const name of Object.keys(seen) as Array<keyof Seen>) {
    const record = (event: unknown) => (seen[name] as Array<{ at: number; event: unknown }>).push({ at: Date.now(), event });
    client.on(name, record as never);
  }
  return { client, seen };
}

function versionsOf(seen: Seen, userId: string): bigint[] {
  return seen.presence.filter((e) => e.event.userId === userId).map((e) => e.event.version);
}

function assertIncreasing(versions: bigint[], what: string): void {
  for (let i = 1; i < versions.length; i++) {
    assert.ok(versions[i]! > versions[i - 1]!, `${what}: versions go up (${versions.join(", ")})`);
  }
}

const sees = (c: PresenceClient, userId: string, status: string, text?: string) => (): UserPresence | undefined => {
  const p = c.presence(userId);
  return p !== undefined && p.status === status && (text === undefined || p.statusText === text) ? p : undefined;
};

test("hello, subscribe and set status: a second client sees the changes, a stop is offline at once", async () => {
  const node = await startNode();
  const alice = connect(node, "alice");
  const bob = connect(node, "bob");
  const welcome = await eventually("alice's welcome", () => alice.seen.connected[0]?.event);
  assert.equal(welcome.userId, "alice");
  assert.ok(welcome.heartbeatIntervalMs > 0 && welcome.sessionTtlMs > welcome.heartbeatIntervalMs);
  bob.client.watch(["alice"]);
  const online = await eventually("bob sees alice online", sees(bob.client, "alice", "online"));
  assert.deepEqual(online.devices, ["node-test"]);

  alice.client.setStatus("busy", "in a call");
  await eventually("bob sees alice busy", sees(bob.client, "alice", "busy", "in a call"));
  alice.client.setStatus("away");
  await eventually("bob sees alice away", sees(bob.client, "alice", "away", ""));

  // A client close is a clean end: OFFLINE at once, well inside the 3 s grace.
  const stoppedAt = Date.now();
  alice.client.stop();
  await eventually("bob sees alice offline", sees(bob.client, "alice", "offline"), 2000);
  assert.ok(Date.now() - stoppedAt < 2000);
  assertIncreasing(versionsOf(bob.seen, "alice"), "bob's view of alice");
  assert.equal(alice.seen.error.length + bob.seen.error.length, 0, "no errors");

  // Unwatching forgets the view.
  bob.client.unwatch(["alice"]);
  assert.equal(bob.client.presence("alice"), undefined);
  bob.client.stop();
});

test("the node killed and restarted on the same port: both clients come back, views recover", async () => {
  const webPort = await freePort();
  const first = await startNode({ webPort });
  const alice = connect(first, "alice");
  const bob = connect(first, "bob");
  await eventually("alice connected", () => alice.client.state === "connected");
  alice.client.setStatus("busy", "before the restart");
  bob.client.watch(["alice", "carol"]);
  const before = await eventually("bob sees alice busy", sees(bob.client, "alice", "busy"));

  first.kill("SIGKILL");
  await first.exited();
  await eventually("both clients see the loss", () =>
    alice.seen.disconnected.length > 0 && bob.seen.disconnected.length > 0,
  );
  assert.ok(!bob.seen.disconnected[0]!.event.fatal && bob.seen.disconnected[0]!.event.retryInMs !== undefined);

  const second = await startNode({ webPort });
  await eventually("both reconnected", () => alice.client.state === "connected" && bob.client.state === "connected", 15_000);
  assert.notEqual(alice.client.session?.nodeId, undefined);
  // The restarted node (in-memory store) forgot everything; alice's client re-sent its
  // status in its hello and bob's its subscriptions.
  const carol = connect(second, "carol");
  await eventually("bob sees carol online (re-subscribed after the reconnect)", sees(bob.client, "carol", "online"));
  const after = await eventually("bob sees alice busy again", sees(bob.client, "alice", "busy", "before the restart"));
  assert.ok(after.version >= before.version);
  alice.client.setStatus("online", "after");
  await eventually("bob sees alice's new status", sees(bob.client, "alice", "online", "after"));
  assertIncreasing(versionsOf(bob.seen, "alice"), "bob's view of alice across the restart");
  carol.client.stop();
  alice.client.stop();
  bob.client.stop();
});

test("a Reconnect frame (the node draining on SIGTERM) is honoured: the client waits the delay given", async () => {
  const webPort = await freePort();
  // Drain spreads retry_after_ms over half the offline grace: 0..2000 ms here.
  const args = ["--offline-grace-ms", "4000", "--shutdown-grace-ms", "5000"];
  const first = await startNode({ webPort, args });
  const alice = connect(first, "alice");
  const bob = connect(first, "bob");
  await eventually("alice connected", () => alice.client.state === "connected");
  alice.client.setStatus("away", "draining soon");
  bob.client.watch(["alice"]);
  await eventually("bob sees alice away", sees(bob.client, "alice", "away"));

  first.kill("SIGTERM");
  for (const { seen, who } of [{ seen: alice.seen, who: "alice" }, { seen: bob.seen, who: "bob" }]) {
    const d = await eventually(`${who} told to reconnect`, () => seen.disconnected[0]);
    assert.ok(d.event.requested, `${who}: ${d.event.reason}`);
    assert.match(d.event.reason, /reconnect requested/);
    assert.ok(d.event.retryInMs !== undefined && d.event.retryInMs >= 0 && d.event.retryInMs <= 2000, String(d.event.retryInMs));
    const attempt = await eventually(`${who} tries again`, () => seen.connecting.find((c) => c.at >= d.at && c !== seen.connecting[0]), 5000);
    assert.ok(attempt.at - d.at >= d.event.retryInMs! - 5, `${who} waited ${attempt.at - d.at} ms of ${d.event.retryInMs}`);
    console.log(`${who}: Reconnect "${d.event.reason}", retry_after_ms ${d.event.retryInMs}, next attempt after ${attempt.at - d.at} ms`);
  }
  await first.exited(10_000);
  await startNode({ webPort, args });
  await eventually("both reconnected", () => alice.client.state === "connected" && bob.client.state === "connected", 15_000);
  await eventually("bob sees alice away again", sees(bob.client, "alice", "away", "draining soon"));
  alice.client.setStatus("busy");
  await eventually("bob sees alice busy", sees(bob.client, "alice", "busy"));
  assertIncreasing(versionsOf(bob.seen, "alice"), "bob's view of alice across the drain");
  alice.client.stop();
  bob.client.stop();
});

test("a refused identity is fatal: reported once, no reconnect loop", async () => {
  const node = await startNode();
  const bad = connect(node, "");
  const err = await eventually("a fatal error", () => bad.seen.error.find((e) => e.event.kind === "fatal"));
  assert.equal(err.event.code, "UNAUTHENTICATED");
  await eventually("failed state", () => bad.client.state === "failed");
  const attempts = bad.seen.connecting.length;
  await new Promise((r) => setTimeout(r, 500)); // a reconnect loop would show attempts here
  assert.equal(bad.seen.connecting.length, attempts);
  assert.ok(bad.seen.disconnected.at(-1)?.event.fatal);
});

test("a refused frame is an error event and the session goes on", async () => {
  const node = await startNode();
  const alice = connect(node, "alice");
  await eventually("connected", () => alice.client.state === "connected");
  alice.client.watch(["ok-user", "bad\u0001id"]);
  const err = await eventually("subscribe refused", () => alice.seen.error[0]?.event);
  assert.equal(err.kind, "frame");
  assert.equal(err.code, "ERROR_CODE_INVALID_USER_ID");
  assert.deepEqual([...err.userIds].sort(), ["bad\u0001id", "ok-user"]);
  assert.deepEqual(alice.client.watching(), []);
  alice.client.watch(["ok-user"]);
  await eventually("ok-user answered", sees(alice.client, "ok-user", "offline"));
  assert.equal(alice.client.state, "connected");
  alice.client.stop();
});

test("heartbeats at the welcome's interval keep a quiet session past the TTL", async () => {
  const node = await startNode({ args: ["--heartbeat-interval-ms", "200", "--session-ttl-ms", "800"] });
  const quiet = connect(node, "quiet");
  const welcome = await eventually("welcome", () => quiet.seen.connected[0]?.event);
  assert.equal(welcome.heartbeatIntervalMs, 200);
  assert.equal(welcome.sessionTtlMs, 800);
  const watcher = connect(node, "watcher");
  watcher.client.watch(["quiet"]);
  await eventually("watcher sees quiet online", sees(watcher.client, "quiet", "online"));
  // Three TTLs without any app activity: only the client's heartbeats keep it alive.
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(quiet.client.state, "connected");
  assert.equal(quiet.seen.disconnected.length, 0, JSON.stringify(quiet.seen.disconnected));
  assert.equal(watcher.client.presence("quiet")?.status, "online");
  quiet.client.stop();
  watcher.client.stop();
});
