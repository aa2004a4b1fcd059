"""Property tests: random messages round-trip; random or damaged bytes only raise ProtocolError."""

import json
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedp2p.wire import (
    DTYPES,
    KINDS,
    Bye,
    Closed,
    Connection,
    Heartbeat,
    Hello,
    Message,
    Payload,
    PeerAddress,
    Peers,
    ProtocolError,
    RemoteProtocolError,
    Role,
    WireTensor,
)
from fedp2p.wire.frames import MsgType

from .netsim import SECRET, connected_pair, drain, insider_frame, wire_bytes

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.integers(0, 2**63 - 1)
text = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S"), include_characters=" "),
    max_size=12,
)
names = text.filter(bool)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1) | finite | text
meta_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@st.composite
def tensors(draw: st.DrawFn, name: str) -> WireTensor:
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    n = DTYPES[dtype]
    for dim in shape:
        n *= dim
    if dtype == "bool":
        data = bytes(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    else:
        data = draw(st.binary(min_size=n, max_size=n))
    return WireTensor(name, dtype, shape, data)


@st.composite
def payloads(draw: st.DrawFn) -> Payload:
    tensor_names = draw(st.lists(names, max_size=5, unique=True))
    return Payload(
        sender=draw(ids),
        round=draw(ids),
        kind=draw(st.sampled_from(sorted(KINDS))),
        tensors=tuple(draw(tensors(name)) for name in tensor_names),
        meta=draw(st.dictionaries(text, meta_values, max_size=4)),
    )


addresses = st.builds(PeerAddress, ids, text, st.integers(0, 65535), text)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello,
        ids,
        text,
        st.integers(0, 65535),
        text,
        st.integers(0, 2**31 - 1),
        st.lists(text, max_size=3).map(tuple),
    ),
    st.builds(Peers, st.lists(addresses, max_size=4).map(tuple)),
    payloads(),
    st.builds(Heartbeat, finite),
    st.builds(Bye, text),
)


def _events_or_protocol_error(conn: Connection, data: bytes, eof: bool = True) -> list[Any]:
    """Feed data (and EOF); only events or a ProtocolError may come out."""
    events: list[Any] = []
    try:
        if data:
            conn.receive_data(data)
        events += drain(conn)
        if eof:
            conn.receive_data(b"")
            events += drain(conn)
    except ProtocolError as exc:
        events.append(exc)
    return events


@FAST
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_random_messages_round_trip_in_random_chunks(
    batch: list[Message], data: st.DataObject
) -> None:
    a, b = connected_pair()
    stream = b"".join(wire_bytes(a, msg) for msg in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    received: list[Any] = []

    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if end > start:
            b.receive_data(stream[start:end])
        received += drain(b)

    assert received == batch


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_before_the_handshake_only_raise_protocol_errors(data: bytes) -> None:
    conn = Connection(Role.RESPONDER, SECRET)
    conn.initiate()

    events = _events_or_protocol_error(conn, data)

    assert isinstance(events[-1], RemoteProtocolError)


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_after_the_handshake_only_raise_protocol_errors(data: bytes) -> None:
    _, b = connected_pair()

    events = _events_or_protocol_error(b, data)

    assert isinstance(events[-1], (RemoteProtocolError, Closed))
    assert events == [Closed()] if not data else isinstance(events[-1], RemoteProtocolError)


@FAST
@given(messages, st.data())
def test_any_single_byte_change_is_detected(msg: Message, data: st.DataObject) -> None:
    a, b = connected_pair()
    frame = bytearray(wire_bytes(a, msg))
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] ^= data.draw(st.integers(1, 255))

    events = _events_or_protocol_error(b, bytes(frame))

    assert len(events) == 1 and isinstance(events[0], RemoteProtocolError)


@FAST
@given(messages, st.data())
def test_truncated_frames_are_refused_with_how_much_arrived(
    msg: Message, data: st.DataObject
) -> None:
    a, b = connected_pair()
    frame = wire_bytes(a, msg)
    cut = data.draw(st.integers(1, len(frame) - 1))

    events = _events_or_protocol_error(b, frame[:cut])

    assert len(events) == 1 and isinstance(events[0], RemoteProtocolError)
    assert "mid-frame" in str(events[0]) and f"{cut} of" in str(events[0])


@FAST
@given(st.data())
def test_damaged_handshake_only_raises_protocol_errors(data: st.DataObject) -> None:
    a = Connection(Role.INITIATOR, SECRET)
    b = Connection(Role.RESPONDER, SECRET)
    b.receive_data(a.initiate())
    a.receive_data(b.initiate())
    drain(b)
    drain(a)
    flights = bytearray(a.data_to_send())
    index = data.draw(st.integers(0, len(flights) - 1))
    flights[index] ^= data.draw(st.integers(1, 255))

    events = _events_or_protocol_error(b, bytes(flights))

    assert len(events) == 1 and isinstance(events[0], RemoteProtocolError)


# --------------------------------------------------- a peer with the secret sending garbage

json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=10,
)


@FAST
@given(
    st.sampled_from([t for t in MsgType if t not in (MsgType.NONCE, MsgType.PROOF)]),
    st.dictionaries(text, json_values, max_size=6),
)
def test_insider_json_garbage_only_raises_protocol_errors(
    msg_type: MsgType, doc: dict[str, Any]
) -> None:
    a, b = connected_pair()
    meta = json.dumps(doc).encode()

    events = _events_or_protocol_error(b, insider_frame(a, msg_type, meta), eof=False)

    assert len(events) == 1


@FAST
@given(payloads().filter(lambda p: bool(p.tensors)), st.data())
def test_insider_mutated_payloads_decode_or_raise_protocol_errors(
    payload: Payload, data: st.DataObject
) -> None:
    a, b = connected_pair()
    frame = wire_bytes(a, payload)
    meta_len = int.from_bytes(frame[8:12], "little")
    body = bytearray(frame[20:-16])
    index = data.draw(st.integers(0, len(body) - 1))
    body[index] = data.draw(st.integers(0, 255))

    frame = insider_frame(a, MsgType.PAYLOAD, bytes(body[:meta_len]), bytes(body[meta_len:]))
    events = _events_or_protocol_error(b, frame, eof=False)

    assert len(events) == 1
    assert isinstance(events[0], (Payload, RemoteProtocolError))


@settings(max_examples=25, deadline=None)
@given(st.integers(2**28, 2**63), st.integers(0, 2**32 - 1))
def test_declared_sizes_beyond_the_limit_allocate_nothing(tensor_len: int, meta_len: int) -> None:
    _, b = connected_pair()
    header = (
        b"FP2P"
        + bytes([1, MsgType.PAYLOAD, 0, 0])
        + meta_len.to_bytes(4, "little")
        + tensor_len.to_bytes(8, "little")
    )
    tracemalloc.start()
    try:
        events = _events_or_protocol_error(b, header, eof=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(events) == 1 and isinstance(events[0], RemoteProtocolError)
    assert peak < 1_000_000
