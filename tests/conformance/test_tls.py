"""TLS and mTLS seen from grpcio (Google's C-core and its own TLS stack, BoringSSL): the
handshake, a whole session over TLS, plaintext refused, client certificates required and
checked (API.md "Transport security and safe defaults")."""

from __future__ import annotations

import grpc
import pytest

from certs import Authority
from conftest import PATIENCE_S, Device, pb, pb_grpc


@pytest.fixture
def pki(tmp_path):
    ca = Authority("presence test CA")
    other = Authority("someone else's CA")
    server_cert, server_key = ca.issue("presence-node", server=True).write(tmp_path, "server")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.pem)
    return ca, other, server_cert, server_key, ca_file


def tls_channel(node, ca_pem: bytes, client=None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    # The certificate names 127.0.0.1 (an IP SAN): no name override needed.
    return grpc.secure_channel(node.addr, credentials)


def ready(channel: grpc.Channel) -> bool:
    try:
        grpc.channel_ready_future(channel).result(timeout=5)
        return True
    except grpc.FutureTimeoutError:
        return False


def get(channel: grpc.Channel, viewer: str, *ids: str):
    return pb_grpc.PresenceServiceStub(channel).GetPresence(
        pb.GetPresenceRequest(user_ids=list(ids)),
        metadata=(("x-user-id", viewer),),
        timeout=PATIENCE_S,
    )


def test_a_session_over_tls(node_factory, pki):
    ca, _, cert, key, _ = pki
    node = node_factory("--tls-cert-file", str(cert), "--tls-key-file", str(key), tls=True)
    channel = tls_channel(node, ca.pem)
    assert ready(channel), "TLS handshake with the node's CA failed"
    bob = Device(node, "bob", "web", channel=channel)
    assert bob.subscribe("alice")[0].status == pb.STATUS_OFFLINE
    alice = Device(node, "alice", "phone", channel=channel)
    assert bob.first_update("alice").status == pb.STATUS_ONLINE
    alice.send(set_status=pb.SetStatus(status=pb.STATUS_AWAY))
    assert bob.first_update("alice").status == pb.STATUS_AWAY
    alice.half_close()
    assert bob.first_update("alice").status == pb.STATUS_OFFLINE


def test_plaintext_to_a_tls_port_fails(node_factory, pki):
    ca, _, cert, key, _ = pki
    node = node_factory("--tls-cert-file", str(cert), "--tls-key-file", str(key), tls=True)
    with pytest.raises(grpc.RpcError) as refused:
        get(grpc.insecure_channel(node.addr), "bob", "alice")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # The node is unaffected.
    assert len(get(tls_channel(node, ca.pem), "bob", "alice").presences) == 1


def test_a_server_certificate_from_another_ca_is_refused_by_the_client(node_factory, pki):
    _, other, cert, key, _ = pki
    node = node_factory("--tls-cert-file", str(cert), "--tls-key-file", str(key), tls=True)
    with pytest.raises(grpc.RpcError) as refused:
        get(tls_channel(node, other.pem), "bob", "alice")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_needs_a_client_certificate_from_the_right_ca(node_factory, pki):
    ca, other, cert, key, ca_file = pki
    node = node_factory(
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-client-ca-file", str(ca_file),
        tls=True,
    )
    # No client certificate.
    with pytest.raises(grpc.RpcError) as no_cert:
        get(tls_channel(node, ca.pem), "bob", "alice")
    assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
    # One signed by another CA.
    stranger = other.issue("stranger", server=False)
    with pytest.raises(grpc.RpcError) as wrong_ca:
        get(tls_channel(node, ca.pem, client=stranger), "bob", "alice")
    assert wrong_ca.value.code() == grpc.StatusCode.UNAVAILABLE
    # The right one: a whole session.
    device = ca.issue("device-1", server=False)
    channel = tls_channel(node, ca.pem, client=device)
    assert len(get(channel, "bob", "alice").presences) == 1
    alice = Device(node, "alice", "phone", channel=channel)
    assert alice.welcome.user_id == "alice"
