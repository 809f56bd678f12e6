// The view merge: versions never go back, whatever order snapshots and updates come in.
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { PresenceSchema, Status } from "../../src/gen/presence/v1/presence_pb.js";
import { fromWire, PresenceView, type UserPresence } from "../../src/view.js";

function p(userId: string, version: bigint, status = Status.ONLINE, statusText = ""): UserPresence {
  return fromWire(create(PresenceSchema, { userId, version, status, statusText, devices: ["web"] }));
}

test("a first entry is taken, whatever its version", () => {
  const view = new PresenceView();
  assert.equal(view.apply(p("alice", 0n, Status.OFFLINE))?.status, "offline");
  assert.equal(view.get("alice")?.version, 0n);
});

test("a higher version replaces, an equal or lower one is ignored", () => {
  const view = new PresenceView();
  view.apply(p("alice", 5n, Status.ONLINE));
  assert.equal(view.apply(p("alice", 5n, Status.BUSY)), undefined, "same version: a duplicate");
  assert.equal(view.apply(p("alice", 4n, Status.AWAY)), undefined, "older: ignored");
  assert.equal(view.get("alice")?.status, "online");
  assert.equal(view.apply(p("alice", 6n, Status.BUSY, "call"))?.statusText, "call");
  assert.equal(view.get("alice")?.status, "busy");
});

test("a stale snapshot after a newer update does not roll the view back", () => {
  const view = new PresenceView();
  view.apply(p("alice", 10n, Status.ONLINE)); // snapshot
  view.apply(p("alice", 12n, Status.BUSY)); // update
  // A re-subscribe (or a reconnect to a lagging node) answers with an older snapshot.
  assert.equal(view.apply(p("alice", 11n, Status.AWAY)), undefined);
  assert.equal(view.get("alice")?.status, "busy");
  assert.equal(view.get("alice")?.version, 12n);
});

test("an update older than the snapshot is ignored (no gap, no rollback)", () => {
  const view = new PresenceView();
  view.apply(p("bob", 20n, Status.AWAY)); // snapshot
  assert.equal(view.apply(p("bob", 19n, Status.ONLINE)), undefined);
  assert.equal(view.apply(p("bob", 21n, Status.ONLINE))?.status, "online");
});

test("a node that forgot the user (version 0) does not erase a known view", () => {
  const view = new PresenceView();
  view.apply(p("alice", 1_700_000_000_000_000n, Status.BUSY));
  assert.equal(view.apply(p("alice", 0n, Status.OFFLINE)), undefined);
  assert.equal(view.get("alice")?.status, "busy");
});

test("users are merged independently, and a deleted user starts afresh", () => {
  const view = new PresenceView();
  view.apply(p("alice", 9n));
  view.apply(p("bob", 3n));
  assert.equal(view.apply(p("bob", 4n, Status.AWAY))?.status, "away");
  assert.equal(view.get("alice")?.version, 9n);
  assert.ok(view.delete("alice"));
  assert.equal(view.apply(p("alice", 2n, Status.AWAY))?.version, 2n);
  assert.deepEqual(view.all().map((u) => u.userId).sort(), ["alice", "bob"]);
});

test("any interleaving yields the highest version seen", () => {
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let round = 0; round < 200; round++) {
    const view = new PresenceView();
    const versions = Array.from({ length: 12 }, (_, i) => BigInt(i + 1));
    versions.sort(() => random() - 0.5);
    let last = 0n;
    for (const v of versions) {
      const changed = view.apply(p("u", v));
      if (changed !== undefined) {
        assert.ok(changed.version > last, "every change moves the version up");
        last = changed.version;
      }
    }
    assert.equal(view.get("u")?.version, 12n);
  }
});

test("wire fields are mapped for apps", () => {
  const u = fromWire(
    create(PresenceSchema, {
      userId: "alice",
      status: Status.INVISIBLE,
      statusText: "x",
      devices: ["ios", "web"],
      sinceMs: 1_700_000_000_123n,
      lastSeenMs: 0n,
      version: 42n,
    }),
    true,
  );
  assert.deepEqual(u, {
    userId: "alice",
    status: "invisible",
    statusText: "x",
    devices: ["ios", "web"],
    sinceMs: 1_700_000_000_123,
    lastSeenMs: 0,
    version: 42n,
    denied: true,
  });
});
