"""Test helpers: wire two Connections together in memory, and play a misbehaving peer."""

from __future__ import annotations

from fedp2p.wire import (
    NEED_DATA,
    Closed,
    Connection,
    Event,
    HandshakeComplete,
    Limits,
    Message,
    Role,
)
from fedp2p.wire.auth import frame_mac
from fedp2p.wire.frames import DEFAULT_LIMITS, MsgType, pack_header

SECRET = bytes(range(32))


def drain(conn: Connection) -> list[Event]:
    """Collect events until the connection needs more data or reports Closed."""
    events: list[Event] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, Closed):
            break
    return events


def handshake(a: Connection, b: Connection) -> tuple[list[Event], list[Event]]:
    """Run the two-flight handshake between a and b, returning each side's events."""
    b.receive_data(a.initiate())
    a.receive_data(b.initiate())
    events_a, events_b = drain(a), drain(b)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    return events_a + drain(a), events_b + drain(b)


def connected_pair(
    secret: bytes = SECRET,
    limits_a: Limits = DEFAULT_LIMITS,
    limits_b: Limits = DEFAULT_LIMITS,
) -> tuple[Connection, Connection]:
    """Return an initiator and a responder that completed their handshake."""
    a = Connection(Role.INITIATOR, secret, limits_a)
    b = Connection(Role.RESPONDER, secret, limits_b)
    events_a, events_b = handshake(a, b)
    assert [type(e) for e in events_a] == [HandshakeComplete]
    assert events_a == events_b
    return a, b


def wire_bytes(conn: Connection, msg: Message) -> bytes:
    """Encode a message the way the sender would put it on the wire."""
    return b"".join(bytes(buf) for buf in conn.send(msg))


def insider_frame(conn: Connection, msg_type: MsgType, meta: bytes, tensors: bytes = b"") -> bytes:
    """Build a correctly MAC'd frame with arbitrary content, as a peer holding the secret could."""
    head = pack_header(msg_type, len(meta), len(tensors)) + meta + tensors
    tag = frame_mac(conn._send_key, conn._send_seq, [head])
    conn._send_seq += 1
    return head + tag
