import json
import os
import struct
import tracemalloc

import pytest

from fedp2p.wire import (
    NEED_DATA,
    Connection,
    Heartbeat,
    Limits,
    LocalProtocolError,
    Payload,
    RemoteProtocolError,
    Role,
    WireTensor,
)
from fedp2p.wire.frames import HEADER, MAGIC, PROTOCOL_VERSION, MsgType, pack_header

from .netsim import SECRET, connected_pair, drain, insider_frame, wire_bytes


def _payload_meta(tensors: list[dict[str, object]], **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {"sender": 1, "round": 0, "kind": "weights", "meta": {}}
    doc["tensors"] = tensors
    doc.update(extra)
    return doc


def _aligned_meta(doc: dict[str, object]) -> bytes:
    meta = json.dumps(doc).encode()
    return meta + b" " * (-(20 + len(meta)) % 64)


def _refused_by_receiver(
    meta: bytes, tensors: bytes = b"", msg_type: MsgType = MsgType.PAYLOAD
) -> str:
    a, b = connected_pair()
    b.receive_data(insider_frame(a, msg_type, meta, tensors))
    with pytest.raises(RemoteProtocolError) as info:
        drain(b)
    return str(info.value)


# ------------------------------------------------------------------ headers


@pytest.mark.parametrize("open_connection", [False, True])
def test_unknown_version_is_refused(open_connection: bool) -> None:
    b = connected_pair()[1] if open_connection else Connection(Role.RESPONDER, SECRET)
    if not open_connection:
        b.initiate()

    b.receive_data(HEADER.pack(MAGIC, PROTOCOL_VERSION - 1, MsgType.HELLO, 0, 2, 0))

    with pytest.raises(
        RemoteProtocolError, match=r"unsupported protocol version 1 \(this peer speaks 2\)"
    ):
        b.next_event()


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER.pack(MAGIC, PROTOCOL_VERSION, 0x7F, 0, 2, 0), "unknown message type 0x7f"),
        (HEADER.pack(MAGIC, PROTOCOL_VERSION, 0x00, 0, 2, 0), "unknown message type 0x00"),
        (HEADER.pack(b"HTTP", PROTOCOL_VERSION, MsgType.HELLO, 0, 2, 0), "bad magic"),
        (HEADER.pack(MAGIC, PROTOCOL_VERSION, MsgType.HELLO, 1, 2, 0), "unsupported flags"),
        (
            HEADER.pack(MAGIC, PROTOCOL_VERSION, MsgType.HELLO, 0, 2, 64),
            "must not carry a tensor section",
        ),
        (
            HEADER.pack(MAGIC, PROTOCOL_VERSION, MsgType.NONCE, 0, 33, 0),
            "unexpected NONCE after the handshake",
        ),
        (
            HEADER.pack(MAGIC, PROTOCOL_VERSION, MsgType.PAYLOAD, 0, 2, 64),
            "not start at an aligned offset",
        ),
    ],
)
def test_bad_headers_are_refused_on_sight(header: bytes, message: str) -> None:
    _, b = connected_pair()

    b.receive_data(header)  # the header alone is enough to refuse

    with pytest.raises(RemoteProtocolError, match=message):
        b.next_event()


def test_handshake_frames_must_have_their_exact_size() -> None:
    b = Connection(Role.RESPONDER, SECRET)
    b.initiate()

    b.receive_data(pack_header(MsgType.NONCE, 10_000, 0))

    with pytest.raises(RemoteProtocolError, match="NONCE frame of 10000 bytes, not 33"):
        b.next_event()


def test_oversized_frame_is_refused_after_the_header_without_allocating() -> None:
    _, b = connected_pair()
    header = pack_header(MsgType.PAYLOAD, 44, 2**40)
    tracemalloc.start()
    try:
        b.receive_data(header)
        with pytest.raises(RemoteProtocolError, match="exceeds the limit of 268435456"):
            b.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 1_000_000


def test_oversized_metadata_is_refused_after_the_header() -> None:
    _, b = connected_pair()
    b.receive_data(pack_header(MsgType.HELLO, 2**20 + 1, 0))

    with pytest.raises(RemoteProtocolError, match="metadata of 1048577 bytes exceeds"):
        b.next_event()


def test_frame_buffer_is_allocated_only_once_the_header_passed() -> None:
    a, b = connected_pair()
    frame = wire_bytes(
        a, Payload(1, 0, "weights", (WireTensor("x", "uint8", (1000,), bytes(1000)),))
    )

    b.receive_data(frame[:19])
    assert b.next_event() is NEED_DATA
    assert b._frame is None
    b.receive_data(frame[19:20])
    assert b.next_event() is NEED_DATA
    assert b._frame is not None and len(b._frame) == len(frame)


def test_receiver_limits_are_enforced_against_a_more_generous_sender() -> None:
    limits = Limits(max_frame_bytes=4096, max_tensors=2, max_ndim=2, max_str_len=8, max_items=2)
    big = Payload(1, 0, "weights", (WireTensor("x", "uint8", (5000,), bytes(5000)),))
    cases = [
        (big, "exceeds the limit of 4096"),
        (
            Payload(
                1, 0, "weights", tuple(WireTensor(f"t{i}", "uint8", (1,), b"x") for i in range(3))
            ),
            "tensors has 3 items",
        ),
        (Payload(1, 0, "weights", (WireTensor("x", "uint8", (1, 1, 1), b"x"),)), "limit is 2"),
        (Payload(1, 0, "weights", (WireTensor("long-name", "uint8", (1,), b"x"),)), "9 characters"),
        (Payload(1, 0, "weights", (), {"a": 1, "b": 2, "c": 3}), "at most 2 keys"),
    ]
    for msg, message in cases:
        a, b = connected_pair(limits_b=limits)
        b.receive_data(wire_bytes(a, msg))
        with pytest.raises(RemoteProtocolError, match=message):
            drain(b)


def test_sender_limits_are_enforced_before_sending() -> None:
    limits = Limits(max_frame_bytes=4096, max_tensors=2, max_ndim=2)
    a, _ = connected_pair(limits_a=limits)

    with pytest.raises(LocalProtocolError, match="exceeds the limit of 4096"):
        a.send(Payload(1, 0, "weights", (WireTensor("x", "uint8", (5000,), bytes(5000)),)))
    with pytest.raises(LocalProtocolError, match="shape of tensor 'x' has 3 items"):
        a.send(Payload(1, 0, "weights", (WireTensor("x", "uint8", (1, 1, 1), b"x"),)))
    with pytest.raises(LocalProtocolError, match="tensors has 3 items"):
        a.send(
            Payload(
                1, 0, "weights", tuple(WireTensor(f"t{i}", "uint8", (1,), b"x") for i in range(3))
            )
        )


def test_limits_must_be_positive_ints() -> None:
    with pytest.raises(ValueError, match="max_tensors"):
        Limits(max_tensors=0)


# ------------------------------------------------------------------ a peer holding the secret


def test_insider_frame_helper_produces_accepted_frames() -> None:
    a, b = connected_pair()
    b.receive_data(insider_frame(a, MsgType.HEARTBEAT, b'{"sent_at": 2.5}'))

    assert drain(b) == [Heartbeat(2.5)]


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (b"\xff\xfe", "not valid UTF-8"),
        (b"{", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"sent_at": NaN}', "NaN is not allowed"),
        (b'{"sent_at": 1e999}', "out of range"),
        (b'{"sent_at": 1, "sent_at": 2}', "duplicate key"),
        (b'{"sent_at": "now"}', "must be a float"),
        (b'{"sent_at": 1, "extra": 0}', "unexpected"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    ],
)
def test_malformed_metadata_is_refused(meta: bytes, message: str) -> None:
    assert message in _refused_by_receiver(meta, msg_type=MsgType.HEARTBEAT)


def test_long_integers_are_refused_before_conversion() -> None:
    meta = b'{"reason": 1' + b"0" * 50_000 + b"}"

    assert "too long" in _refused_by_receiver(meta, msg_type=MsgType.BYE)


def test_bad_dtype_on_the_wire_is_refused() -> None:
    meta = _aligned_meta(_payload_meta([{"name": "x", "dtype": "object", "shape": [1]}]))

    assert "dtype 'object' is not allowed" in _refused_by_receiver(meta, bytes(8))


def test_shape_that_does_not_match_the_bytes_is_refused() -> None:
    meta = _aligned_meta(_payload_meta([{"name": "x", "dtype": "float32", "shape": [3]}]))

    assert "past the end" in _refused_by_receiver(meta, bytes(8))
    assert "unused trailing bytes" in _refused_by_receiver(meta, bytes(16))


def test_huge_declared_shape_is_refused_without_allocating() -> None:
    shape = [2**62] * 8
    meta = _aligned_meta(_payload_meta([{"name": "x", "dtype": "float64", "shape": shape}]))

    assert "past the end" in _refused_by_receiver(meta, bytes(8))


def test_negative_or_boolean_dims_are_refused() -> None:
    for shape in ([-1], [True], [1.0], ["1"]):
        meta = _aligned_meta(_payload_meta([{"name": "x", "dtype": "uint8", "shape": shape}]))
        assert "dim" in _refused_by_receiver(meta, bytes(1))


def test_too_many_dims_and_tensors_on_the_wire_are_refused() -> None:
    deep = _aligned_meta(_payload_meta([{"name": "x", "dtype": "uint8", "shape": [1] * 9}]))
    many = _aligned_meta(
        _payload_meta([{"name": f"t{i}", "dtype": "uint8", "shape": [0]} for i in range(1025)])
    )

    assert "limit is 8" in _refused_by_receiver(deep, bytes(1))
    assert "tensors has 1025 items; the limit is 1024" in _refused_by_receiver(many)


def test_non_zero_padding_is_refused() -> None:
    tensors: list[dict[str, object]] = [
        {"name": "a", "dtype": "uint8", "shape": [1]},
        {"name": "b", "dtype": "uint8", "shape": [1]},
    ]
    meta = _aligned_meta(_payload_meta(tensors))
    section = b"a" + b"\x01" + bytes(62) + b"b"

    assert "non-zero padding" in _refused_by_receiver(meta, section)


def test_tensors_are_aligned_in_the_frame() -> None:
    a, b = connected_pair()
    tensors = tuple(
        WireTensor(f"t{i}", "float64", (i + 1,), os.urandom(8 * (i + 1))) for i in range(5)
    )
    frame = wire_bytes(a, Payload(1, 0, "weights", tensors))
    meta_len = struct.unpack_from("<I", frame, 8)[0]

    b.receive_data(frame)
    (got,) = drain(b)

    assert (20 + meta_len) % 64 == 0
    assert isinstance(got, Payload) and got.tensors == tensors
    base = 20 + meta_len
    offsets = [frame.index(t.data, base) - base for t in tensors]
    assert all(offset % 64 == 0 for offset in offsets)
