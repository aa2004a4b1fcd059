"""The optional TLS layer around the authenticated wire protocol."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from fedp2p.net import PeerJoined, Received
from fedp2p.wire import Payload, WireTensor

from .conftest import wait_event


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=fedp2p-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_tls_nodes_exchange_payload(make_node, tls_contexts) -> None:
    server, client = tls_contexts
    a = make_node(1, server_ssl=server, client_ssl=client)
    b = make_node(2, server_ssl=server, client_ssl=client)
    data = bytes(range(256)) * 1024
    sent = Payload(2, 0, "features", (WireTensor("z", "uint8", (len(data),), data),))

    assert b.connect("127.0.0.1", a.address.port) == 1
    wait_event(a, PeerJoined)
    assert b.send(1, sent)

    assert wait_event(a, Received).message == sent


def test_plain_peer_cannot_join_tls_node(make_node, tls_contexts) -> None:
    server, client = tls_contexts
    a = make_node(1, server_ssl=server, client_ssl=client)
    plain = make_node(2)

    with pytest.raises(ConnectionError):
        plain.connect("127.0.0.1", a.address.port)

    assert a.connected() == frozenset()
