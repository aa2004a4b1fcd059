"""Two nodes (and misbehaving raw peers) over loopback: delivery, timeouts, backpressure."""

from __future__ import annotations

import struct
import threading
import time

import pytest

from fedp2p.net import Node, PeerJoined, PeerLeft, Received
from fedp2p.wire.frames import HEADER, MAGIC, PROTOCOL_VERSION, MsgType
from fedp2p.wire.messages import Bye, Heartbeat, Payload, PeerAddress, Peers, WireTensor

from .conftest import drain, wait_event


def payload(sender: int, nbytes: int = 4096, round_: int = 0) -> Payload:
    data = bytes((i * 7 + sender) % 251 for i in range(nbytes))
    tensor = WireTensor("w", "float32", (nbytes // 4,), data)
    return Payload(sender, round_, "weights", (tensor,), {"note": "hi", "n": 3})


def assert_healthy(node: Node, make_node, peer_id: int = 999) -> None:
    """Another peer can still join the node and exchange a payload both ways."""
    other = make_node(peer_id)
    assert other.connect(node.address.host, node.address.port) == node.peer_id
    wait_event(node, PeerJoined, where=lambda e: e.peer_id == peer_id)
    assert other.send(node.peer_id, payload(peer_id))
    assert wait_event(node, Received).message == payload(peer_id)
    assert node.send(peer_id, payload(node.peer_id))
    assert wait_event(other, Received).message == payload(node.peer_id)


def test_handshake_and_every_message_type(make_node) -> None:
    a, b = make_node(1, arch="cnn3"), make_node(2, arch="cnn7")

    assert b.connect(a.address.host, a.address.port) == 1

    joined_a, joined_b = wait_event(a, PeerJoined), wait_event(b, PeerJoined)
    assert joined_a.address == PeerAddress(2, "127.0.0.1", b.address.port, "cnn7")
    assert joined_b.address == PeerAddress(1, "127.0.0.1", a.address.port, "cnn3")
    assert a.connected() == {2} and b.connected() == {1}
    # Payload both ways, bytes intact.
    assert b.send(1, payload(2, 1 << 20)) and a.send(2, payload(1))
    assert wait_event(a, Received).message == payload(2, 1 << 20)
    assert wait_event(b, Received) == Received(1, payload(1))
    # Heartbeat: consumed by the transport, the link stays up.
    assert a.send(2, Heartbeat(sent_at=time.time()))
    # Peers: gossip lands in membership.
    assert a.send(2, Peers((PeerAddress(77, "10.0.0.7", 4000, "cnn5"),)))
    assert b.wait_for_peers(2, timeout=5)
    assert b.known()[77] == PeerAddress(77, "10.0.0.7", 4000, "cnn5")
    # Bye: the other side sees the peer leave, with the reason.
    assert a.send(2, Bye("done for today"))
    left = wait_event(b, PeerLeft)
    assert left == PeerLeft(1, "bye: done for today")
    assert wait_event(a, PeerLeft).peer_id == 2
    assert not a.send(2, payload(1))


def test_hello_cannot_be_sent_by_hand(make_node) -> None:
    a = make_node(1)
    with pytest.raises(ValueError, match="Hello"):
        a.send(2, a._hello())


def test_duplicate_connections_keep_one(make_node) -> None:
    a, b = make_node(1), make_node(2)
    results: list[int] = []

    def dial(x: Node, y: Node) -> None:
        results.append(x.connect(y.address.host, y.address.port))

    threads = [threading.Thread(target=dial, args=pair) for pair in ((a, b), (b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(results) == [1, 2]
    for node in (a, b):
        with node._changed:
            assert node._changed.wait_for(lambda n=node: len(n._all) == 1, timeout=5)
    assert a.connected() == {2} and b.connected() == {1}
    events = drain(a) + drain(b)
    assert [type(e) for e in events] == [PeerJoined, PeerJoined]
    assert b.send(1, payload(2)) and wait_event(a, Received).message == payload(2)


def test_self_connection_refused(make_node) -> None:
    a = make_node(1)
    with pytest.raises(ConnectionError):
        a.connect(a.address.host, a.address.port)
    assert a.connected() == frozenset()


def test_wrong_secret_cannot_join(make_node) -> None:
    a = make_node(1)
    intruder = make_node(66, secret=b"not the secret!!" * 2)

    with pytest.raises(ConnectionError):
        intruder.connect(a.address.host, a.address.port)

    assert a.connected() == frozenset() and intruder.connected() == frozenset()
    assert not [e for e in drain(a) if isinstance(e, PeerJoined)]
    assert_healthy(a, make_node)


def test_unreachable_address_fails_after_retries(make_node) -> None:
    a = make_node(1)
    b = make_node(2)
    port = b.address.port
    b.stop()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="3 tries"):
        a.connect("127.0.0.1", port)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "opening",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="garbage"),
        pytest.param(
            HEADER.pack(MAGIC, PROTOCOL_VERSION, MsgType.NONCE, 0, 2**31, 2**40), id="oversized"
        ),
        pytest.param(b"", id="silent"),
    ],
)
def test_bad_openings_are_closed(make_node, raw_peers, opening: bytes) -> None:
    a = make_node(1)
    raw = raw_peers(("127.0.0.1", a.address.port))

    raw.sock.sendall(opening)

    started = time.monotonic()
    assert raw.closed_within(3.0)
    assert time.monotonic() - started < a.config.handshake_timeout_s + 1.0
    assert a.connected() == frozenset()
    assert_healthy(a, make_node)


def test_oversized_frame_after_auth_is_closed(make_node, raw_peers) -> None:
    a = make_node(1)
    raw = raw_peers(("127.0.0.1", a.address.port))
    raw.join(5)
    wait_event(a, PeerJoined)

    raw.sock.sendall(HEADER.pack(MAGIC, PROTOCOL_VERSION, MsgType.PAYLOAD, 0, 64 - 20, 2**40))

    left = wait_event(a, PeerLeft)
    assert left.peer_id == 5 and "protocol error" in left.reason and "exceeds" in left.reason
    assert raw.closed_within(3.0)
    assert_healthy(a, make_node)


def test_tampered_frame_is_closed(make_node, raw_peers) -> None:
    a = make_node(1)
    raw = raw_peers(("127.0.0.1", a.address.port))
    raw.join(5)
    frame = bytearray(raw.frame_bytes(payload(5)))
    frame[200] ^= 1

    raw.sock.sendall(frame)

    left = wait_event(a, PeerLeft)
    assert "authentication" in left.reason
    assert_healthy(a, make_node)


def test_slow_sender_is_dropped(make_node, raw_peers) -> None:
    a = make_node(1, dead_peer_timeout_s=10.0)  # well apart, so a loaded machine cannot race them
    raw = raw_peers(("127.0.0.1", a.address.port))
    raw.join(5)
    frame = raw.frame_bytes(payload(5, 1 << 20))

    started = time.monotonic()
    raw.sock.sendall(frame[:100_000])  # then stall mid-frame

    left = wait_event(a, PeerLeft, timeout=5)
    assert "slow sender" in left.reason
    assert time.monotonic() - started < a.config.dead_peer_timeout_s
    assert_healthy(a, make_node)


def test_small_frame_begun_with_the_previous_one_counts_as_slow_sender(
    make_node, raw_peers
) -> None:
    a = make_node(1, dead_peer_timeout_s=10.0)
    raw = raw_peers(("127.0.0.1", a.address.port))
    raw.join(5)
    wait_event(a, PeerJoined)
    first, second = raw.frame_bytes(Heartbeat(1.0)), raw.frame_bytes(Heartbeat(2.0))

    started = time.monotonic()
    raw.sock.sendall(first + second[:10])  # one complete frame and the start of the next

    left = wait_event(a, PeerLeft, timeout=5)
    assert "slow sender" in left.reason
    assert time.monotonic() - started < a.config.dead_peer_timeout_s


def test_dead_peer_is_dropped(make_node, raw_peers) -> None:
    a = make_node(1)
    raw = raw_peers(("127.0.0.1", a.address.port))
    raw.join(5)
    wait_event(a, PeerJoined)

    left = wait_event(a, PeerLeft, timeout=5)  # the raw peer never sends heartbeats

    assert left.peer_id == 5 and "dead peer" in left.reason


def test_peer_closed_abruptly_is_reported(make_node, raw_peers) -> None:
    a = make_node(1)
    raw = raw_peers(("127.0.0.1", a.address.port))
    raw.join(5)
    wait_event(a, PeerJoined)

    raw.sock.setsockopt(
        __import__("socket").SOL_SOCKET, __import__("socket").SO_LINGER, struct.pack("ii", 1, 0)
    )
    raw.close()  # RST

    left = wait_event(a, PeerLeft, timeout=2)
    assert left.peer_id == 5


def test_backpressure_send_fails_instead_of_growing(make_node, raw_peers) -> None:
    a = make_node(1, socket_buffer_bytes=64 * 1024, send_queue_size=4, dead_peer_timeout_s=30.0)
    raw = raw_peers(("127.0.0.1", a.address.port), rcvbuf=64 * 1024)
    raw.join(5)
    wait_event(a, PeerJoined)
    big = payload(1, 1 << 20)

    accepted = 0
    started = time.monotonic()
    while a.send(5, big, timeout=0.2):  # the raw peer never reads
        accepted += 1
        assert accepted < 20, "send never pushed back"

    assert accepted <= 4 + 2  # the queue, plus what the kernel buffers and the writer holds
    assert time.monotonic() - started < 10
    assert 5 in a.connected()  # a full queue is not a failure of the link
