"""How a session ends, seen from grpcio: a cancel (RST_STREAM) lingers for the grace and a
reconnect inside it shows watchers nothing; a half-close (END_STREAM) is OFFLINE at once
(API.md: semantics 3, "Client cancel is an abrupt end")."""

from __future__ import annotations

import time

import grpc

from conftest import Device, pb

ONLINE = pb.STATUS_ONLINE
OFFLINE = pb.STATUS_OFFLINE


def watched_alice(node):
    bob = Device(node, "bob", "web")
    (snapshot,) = bob.subscribe("alice")
    assert snapshot.status == OFFLINE
    alice = Device(node, "alice", "phone")
    assert bob.first_update("alice").status == ONLINE
    return bob, alice


def test_a_cancel_lingers_and_a_reconnect_inside_the_grace_shows_nothing(node_factory):
    node = node_factory("--offline-grace-ms", "3000", "--sweep-interval-ms", "50")
    bob, alice = watched_alice(node)

    alice.cancel()
    time.sleep(0.3)  # the client's own reconnect delay, not a synchronisation
    again = Device(node, "alice", "phone")

    # Past the grace: bob never saw alice leave (no update at all: his view never changed).
    seen = bob.updates_for("alice", 4.0)
    assert seen == [], f"watcher saw a flap: {[pb.Status.Name(p.status) for p in seen]}"
    (alice_now,) = node.get("bob", "alice")
    assert alice_now.status == ONLINE
    assert list(alice_now.devices) == ["phone"]
    assert again.welcome.user_id == "alice"


def test_a_cancel_without_reconnect_goes_offline_after_the_grace_not_before(node_factory):
    grace_s = 2.0
    node = node_factory("--offline-grace-ms", str(int(grace_s * 1000)), "--sweep-interval-ms", "50")
    bob, alice = watched_alice(node)

    cancelled_at = time.monotonic()
    alice.cancel()
    offline = bob.first_update("alice", timeout=grace_s + 5)
    waited = time.monotonic() - cancelled_at
    assert offline.status == OFFLINE
    assert waited >= grace_s - 0.1, f"OFFLINE {waited:.2f} s after a cancel: it did not linger"


def test_a_half_close_is_offline_at_once(node_factory):
    node = node_factory("--offline-grace-ms", "10000", "--sweep-interval-ms", "50")
    bob, alice = watched_alice(node)

    closed_at = time.monotonic()
    alice.half_close()
    offline = bob.first_update("alice", timeout=5)
    assert offline.status == OFFLINE
    assert time.monotonic() - closed_at < 5, "a half-close waited for the grace"
    # The node ends the call cleanly.
    assert alice.end() is not None


def test_a_watcher_cancelling_leaves_the_others_untouched(node_factory):
    node = node_factory("--offline-grace-ms", "2000", "--sweep-interval-ms", "50")
    bob, alice = watched_alice(node)
    carol = Device(node, "carol", "desk")
    assert carol.subscribe("alice")[0].status == ONLINE

    bob.cancel()
    alice.send(set_status=pb.SetStatus(status=pb.STATUS_BUSY, status_text="focus"))
    busy = carol.first_update("alice")
    assert (busy.status, busy.status_text) == (pb.STATUS_BUSY, "focus")


def test_get_presence_answers_in_request_order_with_unknown_users_at_version_zero(node_factory):
    node = node_factory()
    alice = Device(node, "alice", "phone")
    got = node.get("bob", "nobody", "alice", "nobody")
    assert [p.user_id for p in got] == ["nobody", "alice", "nobody"]
    assert [p.status for p in got] == [OFFLINE, ONLINE, OFFLINE]
    assert got[0].version == 0 and got[1].version > 0
    assert alice.welcome.heartbeat_interval_ms > 0


def test_no_identity_is_unauthenticated(node_factory):
    node = node_factory()
    try:
        node.stub.GetPresence(pb.GetPresenceRequest(user_ids=["alice"]), timeout=5)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        raise AssertionError("a call without identity was answered")
