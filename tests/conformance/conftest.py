"""Fixtures of the conformance tests: the presence node as a real process, spoken to by
Google's C-core gRPC (grpcio), an implementation independent of the node's own tonic client.

Run by scripts/conformance.sh, which builds the venv, generates the Python stubs from
proto/ and points PRESENCE_NODE_BIN at the node binary.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, os.environ["CONFORMANCE_STUBS"])

from presence.v1 import presence_pb2 as pb  # noqa: E402
from presence.v1 import presence_pb2_grpc as pb_grpc  # noqa: E402

NODE_BIN = os.environ["PRESENCE_NODE_BIN"]
# Every wait in these tests has a deadline; nothing waits on the network without one.
PATIENCE_S = float(os.environ.get("CONFORMANCE_PATIENCE_S", "10"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A presence-node process on a free loopback port; SIGKILLed if it outlives the test."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, tls: bool = False):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="presence-node-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [NODE_BIN, "--listen-addr", self.addr, *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "info", **(env or {})},
        )
        self.channel = grpc.insecure_channel(self.addr)
        if tls:
            # A TLS port: the test makes its own secure channels; wait for the listener.
            self._wait_listening()
        else:
            try:
                grpc.channel_ready_future(self.channel).result(timeout=PATIENCE_S)
            except grpc.FutureTimeoutError:
                self.stop()
                raise AssertionError(f"node did not start:\n{self.output()}")
        self.stub = pb_grpc.PresenceServiceStub(self.channel)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"node exited:\n{self.output()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"node did not listen within {PATIENCE_S} s:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def get(self, viewer: str, *user_ids: str) -> list:
        response = self.stub.GetPresence(
            pb.GetPresenceRequest(user_ids=list(user_ids)),
            metadata=(("x-user-id", viewer),),
            timeout=PATIENCE_S,
        )
        return list(response.presences)

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=PATIENCE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


_END = object()


class Device:
    """One `Session` call from grpcio: frames go out through a queue (ending the request
    iterator is a clean half-close), replies come in on a reader thread."""

    def __init__(self, node: Node, user: str, device: str, channel: grpc.Channel | None = None):
        self.user = user
        self.outgoing: queue.Queue = queue.Queue()
        self.incoming: queue.Queue = queue.Queue()
        self.next_ref = 1
        stub = pb_grpc.PresenceServiceStub(channel) if channel else node.stub
        self.call = stub.Session(self._requests(), metadata=(("x-user-id", user),))
        threading.Thread(target=self._read, daemon=True).start()
        self.send(hello=pb.Hello(device=device))
        self.welcome = self.expect("welcome").welcome

    def _requests(self):
        while True:
            frame = self.outgoing.get()
            if frame is _END:
                return
            yield frame

    def _read(self) -> None:
        try:
            for frame in self.call:
                self.incoming.put(frame)
            self.incoming.put(_END)
        except grpc.RpcError as e:
            self.incoming.put(e)

    def send(self, **kind) -> int:
        ref = self.next_ref
        self.next_ref += 1
        self.outgoing.put(pb.ClientFrame(ref=ref, **kind))
        return ref

    def recv(self, timeout: float):
        """The next reply, `_END` for a clean end of the call, or the grpc.RpcError it ended
        with; raises queue.Empty after `timeout`."""
        return self.incoming.get(timeout=timeout)

    def expect(self, kind: str, timeout: float = PATIENCE_S):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind} frame within {timeout} s"
            frame = self.recv(left)
            assert isinstance(frame, pb.ServerFrame), f"call ended before {kind}: {frame!r}"
            if frame.WhichOneof("kind") == kind:
                return frame

    def subscribe(self, *user_ids: str):
        ref = self.send(subscribe=pb.Subscribe(user_ids=list(user_ids)))
        snapshot = self.expect("snapshot").snapshot
        assert snapshot.ref == ref
        return list(snapshot.presences)

    def updates_for(self, user_id: str, seconds: float) -> list:
        """Every update of `user_id` that arrives within `seconds`."""
        seen = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = self.recv(left)
            except queue.Empty:
                break
            assert isinstance(frame, pb.ServerFrame), f"watcher's call ended: {frame!r}"
            if frame.WhichOneof("kind") == "update":
                seen += [p for p in frame.update.presences if p.user_id == user_id]
        return seen

    def first_update(self, user_id: str, timeout: float = PATIENCE_S):
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            frame = self.recv(left)
            assert isinstance(frame, pb.ServerFrame), f"watcher's call ended: {frame!r}"
            if frame.WhichOneof("kind") == "update":
                for p in frame.update.presences:
                    if p.user_id == user_id:
                        return p
        raise AssertionError(f"no update of {user_id} within {timeout} s")

    def cancel(self) -> None:
        """What grpcio sends on cancel(): RST_STREAM(CANCEL)."""
        self.call.cancel()

    def half_close(self) -> None:
        self.outgoing.put(_END)

    def end(self, timeout: float = PATIENCE_S):
        """Waits for the call's end: `_END` (OK) or the RpcError."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            frame = self.recv(left)
            if not isinstance(frame, pb.ServerFrame):
                return frame
        raise AssertionError(f"call did not end within {timeout} s")


@pytest.fixture
def node_factory():
    nodes: list[Node] = []

    def start(*args: str, env: dict[str, str] | None = None, tls: bool = False) -> Node:
        node = Node(*args, env=env, tls=tls)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
