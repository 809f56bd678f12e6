"""The web listener seen from clients that are not ours: Python `websockets` for the
`Session` protocol over a WebSocket (both subprotocols), grpcio on the gRPC port for the other
side, and the standard library's http.client for gRPC-Web and CORS (API.md, "Browsers: the
web listener")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import signal
import socket
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import PATIENCE_S, Device, free_port, pb

JSON = "presence.v1.json"
PROTO = "presence.v1.proto"
SECRET = "conformance-web-secret"
FAST_SWEEP = ("--sweep-interval-ms", "50")


def web_node(node_factory, *args: str, env=None, tls: bool = False):
    """A node with a web listener; returns (node, web address)."""
    port = free_port()
    node = node_factory("--web-addr", f"127.0.0.1:{port}", *args, env=env, tls=tls)
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return node, f"127.0.0.1:{port}"
        except OSError:
            assert time.monotonic() < deadline, f"web listener not up:\n{node.output()}"
            time.sleep(0.05)


def jwt(sub: str, exp_in_s: float = 3600) -> str:
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    header = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = enc(json.dumps({"sub": sub, "exp": int(time.time() + exp_in_s)}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{enc(signature)}"


class WebDevice:
    """One session over a WebSocket, in either subprotocol; frames are dicts in the proto3
    JSON mapping whatever the subprotocol (the proto one is converted with the stubs)."""

    def __init__(self, web: str, user: str | None, device: str | None = "web",
                 protocol: str = JSON, query: str | None = None, headers=None, origin=None,
                 ssl_context=None):
        query = query if query is not None else f"user_id={user}"
        self.protocol = protocol
        scheme = "wss" if ssl_context else "ws"
        self.ws = connect(
            f"{scheme}://{web}/v1/session?{query}",
            ssl=ssl_context,
            subprotocols=[protocol],
            additional_headers=headers,
            origin=origin,
            open_timeout=PATIENCE_S,
            close_timeout=2,
        )
        assert self.ws.subprotocol == protocol
        self.next_ref = 1
        if device is not None:
            self.send({"hello": {"device": device}})
            self.welcome = self.expect("welcome")["welcome"]

    def send(self, frame: dict) -> int:
        ref = self.next_ref
        self.next_ref += 1
        frame = {"ref": str(ref), **frame}
        if self.protocol == JSON:
            self.ws.send(json.dumps(frame))
        else:
            from google.protobuf import json_format
            self.ws.send(json_format.ParseDict(frame, pb.ClientFrame()).SerializeToString())
        return ref

    def recv(self, timeout: float) -> dict:
        message = self.ws.recv(timeout=timeout)
        if self.protocol == JSON:
            assert isinstance(message, str), "json frames are text messages"
            return json.loads(message)
        from google.protobuf import json_format
        assert isinstance(message, bytes), "proto frames are binary messages"
        return json_format.MessageToDict(pb.ServerFrame.FromString(message))

    def expect(self, kind: str, timeout: float = PATIENCE_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind} frame within {timeout} s"
            frame = self.recv(left)
            if kind in frame:
                return frame

    def subscribe(self, *user_ids: str) -> list:
        ref = self.send({"subscribe": {"userIds": list(user_ids)}})
        snapshot = self.expect("snapshot")["snapshot"]
        assert snapshot["ref"] == str(ref)
        return snapshot["presences"]

    def first_update(self, user_id: str, timeout: float = PATIENCE_S) -> dict:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            frame = self.recv(left)
            for p in frame.get("update", {}).get("presences", []):
                if p["userId"] == user_id:
                    return p
        raise AssertionError(f"no update of {user_id} within {timeout} s")

    def closed_with(self, timeout: float = PATIENCE_S) -> tuple[int, str]:
        """Waits for the node's close: (code, reason); frames before it are dropped."""
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.ws.recv(timeout=left)
        except ConnectionClosed as e:
            assert e.rcvd is not None, f"connection lost without a close frame: {e!r}"
            return e.rcvd.code, e.rcvd.reason
        except TimeoutError:
            pass
        raise AssertionError(f"no close within {timeout} s")

    def drop(self) -> None:
        """The TCP connection gone without a close frame (a tab killed, a network gone). The
        client's reader thread is blocked on the socket, so `close` alone would not release it:
        `shutdown` ends the connection now."""
        sock = self.ws.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def refusal(web: str, query: str = "user_id=alice", protocols=(JSON,), origin=None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{web}/v1/session?{query}", subprotocols=list(protocols) or None,
                origin=origin, open_timeout=PATIENCE_S)
    return refused.value.response.status_code


@pytest.mark.parametrize("protocol", [JSON, PROTO])
def test_both_subprotocols_say_hello_and_get_welcome(node_factory, protocol):
    _, web = web_node(node_factory)
    alice = WebDevice(web, "alice", protocol=protocol)
    assert alice.welcome["userId"] == "alice"
    assert int(alice.welcome["heartbeatIntervalMs"]) > 0
    alice.send({"heartbeat": {}})
    assert "heartbeatAck" in alice.expect("heartbeatAck")


def test_json_is_the_standard_mapping(node_factory):
    _, web = web_node(node_factory)
    alice = WebDevice(web, "alice")
    alice.ws.send(json.dumps({"ref": 9, "set_status": {"status": "STATUS_BUSY"}}))
    assert alice.expect("ack")["ack"]["ref"] == "9"
    (me,) = alice.subscribe("alice")
    assert me["status"] == "STATUS_BUSY"
    assert isinstance(me["version"], str), "64-bit integers are strings"


def test_a_websocket_watcher_sees_a_grpc_user_and_a_grpc_watcher_a_websocket_user(node_factory):
    node, web = web_node(node_factory)
    bob = WebDevice(web, "bob")
    (alice_before,) = bob.subscribe("alice")
    assert alice_before["status"] == "STATUS_OFFLINE"
    alice = Device(node, "alice", "phone")
    assert bob.first_update("alice")["status"] == "STATUS_ONLINE"
    alice.send(set_status=pb.SetStatus(status=pb.STATUS_BUSY))
    assert bob.first_update("alice")["status"] == "STATUS_BUSY"

    carol = Device(node, "carol", "desk")
    assert carol.subscribe("dave")[0].status == pb.STATUS_OFFLINE
    dave = WebDevice(web, "dave", protocol=PROTO)
    assert carol.first_update("dave").status == pb.STATUS_ONLINE
    dave.send({"setStatus": {"status": "STATUS_AWAY"}})
    assert carol.first_update("dave").status == pb.STATUS_AWAY


def test_a_close_is_offline_at_once(node_factory):
    node, web = web_node(node_factory, "--offline-grace-ms", "10000", *FAST_SWEEP)
    bob = Device(node, "bob", "desk")
    bob.subscribe("alice")
    alice = WebDevice(web, "alice")
    assert bob.first_update("alice").status == pb.STATUS_ONLINE
    closed_at = time.monotonic()
    alice.ws.close()
    assert bob.first_update("alice", timeout=5).status == pb.STATUS_OFFLINE
    assert time.monotonic() - closed_at < 5, "a close waited for the grace"


def test_a_tcp_drop_lingers_and_a_reconnect_inside_the_grace_shows_nothing(node_factory):
    node, web = web_node(node_factory, "--offline-grace-ms", "3000", *FAST_SWEEP)
    bob = Device(node, "bob", "desk")
    bob.subscribe("alice")
    alice = WebDevice(web, "alice")
    assert bob.first_update("alice").status == pb.STATUS_ONLINE
    alice.drop()
    time.sleep(0.3)  # the client's own reconnect delay, not a synchronisation
    again = WebDevice(web, "alice")
    seen = bob.updates_for("alice", 4.0)
    assert seen == [], f"watcher saw a flap: {[pb.Status.Name(p.status) for p in seen]}"
    assert again.welcome["userId"] == "alice"


def test_a_tcp_drop_without_reconnect_goes_offline_after_the_grace(node_factory):
    node, web = web_node(node_factory, "--offline-grace-ms", "2000", *FAST_SWEEP)
    bob = Device(node, "bob", "desk")
    bob.subscribe("alice")
    alice = WebDevice(web, "alice")
    assert bob.first_update("alice").status == pb.STATUS_ONLINE
    dropped_at = time.monotonic()
    alice.drop()
    assert bob.first_update("alice", timeout=7).status == pb.STATUS_OFFLINE
    assert time.monotonic() - dropped_at >= 1.9, "a drop did not linger"


def test_refusals_before_the_upgrade(node_factory):
    _, web = web_node(node_factory, "--web-allowed-origins", "https://app.example")
    assert refusal(web, protocols=()) == 400
    assert refusal(web, protocols=("chat.v1",)) == 400
    assert refusal(web, query="") == 401
    assert refusal(web, origin="https://evil.example") == 403
    # Allowed: a configured origin, the listener's own.
    WebDevice(web, "alice", origin="https://app.example")
    WebDevice(web, "bob", origin=f"http://{web}")


def test_a_bad_or_missing_token_is_refused_in_jwt_mode(node_factory):
    _, web = web_node(node_factory, "--auth", "jwt", "--jwt-secret", SECRET)
    assert refusal(web, query="user_id=alice") == 401
    assert refusal(web, query="access_token=not.a.token") == 401
    forged = jwt("alice")[:-4] + "AAAA"
    assert refusal(web, query=f"access_token={forged}") == 401
    alice = WebDevice(web, None, query=f"access_token={jwt('alice')}")
    assert alice.welcome["userId"] == "alice"
    bearer = WebDevice(web, None, query="", headers={"authorization": f"Bearer {jwt('bob')}"})
    assert bearer.welcome["userId"] == "bob"


def test_no_hello_within_the_timeout_closes_4004(node_factory):
    _, web = web_node(node_factory, "--hello-timeout-ms", "500", *FAST_SWEEP)
    silent = WebDevice(web, "alice", device=None)
    code, _ = silent.closed_with()
    assert code == 4004


def test_past_the_open_rate_closes_4008(node_factory):
    _, web = web_node(node_factory, "--session-open-rate-per-s", "1",
                      "--session-open-rate-burst", "1")
    WebDevice(web, "alice")
    refused = WebDevice(web, "alice", device=None)
    code, reason = refused.closed_with()
    assert code == 4008
    assert "session opens" in reason


def test_an_expired_token_closes_4016(node_factory):
    _, web = web_node(node_factory, "--auth", "jwt", "--jwt-secret", SECRET,
                      "--jwt-leeway-ms", "0", *FAST_SWEEP)
    alice = WebDevice(web, None, query=f"access_token={jwt('alice', exp_in_s=2)}")
    code, _ = alice.closed_with(timeout=6)
    assert code == 4016


@pytest.mark.parametrize("bad", ["garbage", "binary-on-json", "text-on-proto", "oversized"])
def test_bad_input_closes_4003(node_factory, bad):
    _, web = web_node(node_factory)
    protocol = PROTO if bad == "text-on-proto" else JSON
    alice = WebDevice(web, "alice", protocol=protocol)
    message = {
        "garbage": '{"ref": "1", "hello": ',
        "binary-on-json": b"\x08\x01",
        "text-on-proto": "{}",
        "oversized": json.dumps({"setStatus": {"statusText": "x" * 1_100_000}}),
    }[bad]
    alice.ws.send(message)
    code, reason = alice.closed_with()
    assert code == 4003, reason
    assert reason


def test_draining_closes_4014(node_factory):
    node, web = web_node(node_factory, "--shutdown-grace-ms", "2000")
    alice = WebDevice(web, "alice")
    node.proc.send_signal(signal.SIGTERM)
    assert "reconnect" in alice.expect("reconnect")
    late = WebDevice(web, "bob", device=None)
    assert late.closed_with()[0] == 4014
    # Alice stays past the grace (a client that ignores Reconnect): UNAVAILABLE.
    assert alice.closed_with()[0] == 4014


def test_a_token_is_never_logged(node_factory):
    node, web = web_node(node_factory, "--auth", "jwt", "--jwt-secret", SECRET,
                         env={"RUST_LOG": "debug"})
    token = jwt("alice")
    alice = WebDevice(web, None, query=f"access_token={token}")
    alice.subscribe("bob")
    alice.ws.close()
    bad = jwt("mallory")[:-4] + "AAAA"
    assert refusal(web, query=f"access_token={bad}") == 401
    node.stop()
    logs = node.output()
    assert "session" in logs, "debug logging was on"
    for secret in (token, bad, token.split(".")[2], bad.split(".")[2]):
        assert secret not in logs


def grpc_web(web: str, path: str, message: bytes, headers: dict) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection(web, timeout=PATIENCE_S)
    body = b"\x00" + struct.pack(">I", len(message)) + message
    conn.request("POST", path, body=body, headers={
        "content-type": "application/grpc-web+proto", "x-grpc-web": "1", **headers})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, dict(response.getheaders())


def frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        flag, length = data[0], struct.unpack(">I", data[1:5])[0]
        out.append((flag, data[5:5 + length]))
        data = data[5 + length:]
    return out


def test_grpc_web_get_presence_answers_a_data_and_a_trailer_frame(node_factory):
    node, web = web_node(node_factory)
    Device(node, "alice", "phone")
    request = pb.GetPresenceRequest(user_ids=["alice", "nobody"]).SerializeToString()
    status, data, headers = grpc_web(web, "/presence.v1.PresenceService/GetPresence", request,
                                     {"x-user-id": "bob"})
    assert status == 200
    assert headers["content-type"].startswith("application/grpc-web")
    (data_flag, payload), (trailer_flag, trailers) = frames(data)
    assert data_flag == 0x00
    answer = pb.GetPresenceResponse.FromString(payload)
    assert [(p.user_id, p.status) for p in answer.presences] == [
        ("alice", pb.STATUS_ONLINE), ("nobody", pb.STATUS_OFFLINE)]
    assert trailer_flag == 0x80
    assert b"grpc-status:0" in trailers.replace(b" ", b"")


def test_grpc_web_message_too_large_is_resource_exhausted(node_factory):
    _, web = web_node(node_factory)
    request = pb.GetPresenceRequest(user_ids=["u" * (2 * 1024 * 1024)]).SerializeToString()
    status, data, headers = grpc_web(web, "/presence.v1.PresenceService/GetPresence", request,
                                     {"x-user-id": "bob"})
    assert status == 200
    # Trailers-only: the status in the headers, or in a trailer frame of the body.
    where = {k.lower(): v for k, v in headers.items()}
    if "grpc-status" in where:
        assert where["grpc-status"] == "8", where
        assert "uuuu" not in where.get("grpc-message", "")
    else:
        trailers = dict(frames(data))[0x80].replace(b" ", b"")
        assert b"grpc-status:8" in trailers, trailers
        assert b"uuuu" not in trailers


def test_grpc_web_serves_get_presence_only(node_factory):
    _, web = web_node(node_factory)
    status, _, _ = grpc_web(web, "/presence.v1.PresenceService/Session", b"", {"x-user-id": "b"})
    assert status == 404


def preflight(web: str, origin: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(web, timeout=PATIENCE_S)
    conn.request("OPTIONS", "/presence.v1.PresenceService/GetPresence", headers={
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-grpc-web,x-user-id",
    })
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}


def test_cors_preflight_allowed_and_foreign(node_factory):
    node, web = web_node(node_factory, "--web-allowed-origins", "https://app.example")
    status, headers = preflight(web, "https://app.example")
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert "x-user-id" in headers["access-control-allow-headers"].lower()
    status, _ = preflight(web, "https://evil.example")
    assert status == 403
    # The actual call from the allowed origin exposes the gRPC status to the page.
    Device(node, "alice", "phone")
    request = pb.GetPresenceRequest(user_ids=["alice"]).SerializeToString()
    status, _, headers = grpc_web(web, "/presence.v1.PresenceService/GetPresence", request,
                                  {"x-user-id": "bob", "origin": "https://app.example"})
    assert status == 200
    assert "grpc-status" in headers["access-control-expose-headers"].lower()


def test_the_demo_page_is_served_with_a_strict_policy(node_factory):
    _, web = web_node(node_factory)
    for path, kind in (("/", "text/html"), ("/presence-demo.js", "text/javascript")):
        conn = http.client.HTTPConnection(web, timeout=PATIENCE_S)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 200 and body
        assert response.getheader("content-type").startswith(kind)
        csp = response.getheader("content-security-policy")
        assert "script-src 'self'" in csp and "default-src 'none'" in csp


def test_tls_serves_wss_and_grpc_web_over_https(node_factory, tmp_path):
    import ssl

    from certs import Authority

    ca = Authority("presence test CA")
    cert, key = ca.issue("presence-node", server=True).write(tmp_path, "server")
    node, web = web_node(node_factory, "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                         tls=True)
    context = ssl.create_default_context(cadata=ca.pem.decode())
    alice = WebDevice(web, "alice", ssl_context=context)
    assert alice.welcome["userId"] == "alice"
    # Plain ws:// to the TLS port is not served.
    with pytest.raises(Exception):
        connect(f"ws://{web}/v1/session?user_id=bob", subprotocols=[JSON], open_timeout=5)
    conn = http.client.HTTPSConnection(web, timeout=PATIENCE_S, context=context)
    message = pb.GetPresenceRequest(user_ids=["alice"]).SerializeToString()
    conn.request("POST", "/presence.v1.PresenceService/GetPresence",
                 body=b"\x00" + struct.pack(">I", len(message)) + message,
                 headers={"content-type": "application/grpc-web+proto", "x-user-id": "bob"})
    response = conn.getresponse()
    (_, payload), (trailer_flag, _) = frames(response.read())
    conn.close()
    assert pb.GetPresenceResponse.FromString(payload).presences[0].status == pb.STATUS_ONLINE
    assert trailer_flag == 0x80
