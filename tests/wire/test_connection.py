import os
import struct

import numpy as np
import pytest

from fedp2p.wire import (
    NEED_DATA,
    RECV_INTO_MIN,
    Bye,
    Closed,
    Connection,
    HandshakeComplete,
    Heartbeat,
    Hello,
    LocalProtocolError,
    Message,
    Payload,
    PeerAddress,
    Peers,
    ProtocolError,
    RemoteProtocolError,
    Role,
    WireTensor,
)

from .netsim import SECRET, connected_pair, drain, handshake, wire_bytes


def _tensor(name: str, dtype: str, shape: tuple[int, ...], itemsize: int) -> WireTensor:
    n = itemsize
    for d in shape:
        n *= d
    return WireTensor(name, dtype, shape, os.urandom(n))


MESSAGES: list[Message] = [
    Hello(7, "10.0.0.7", 9000, "cnn7", 1, ("kd", "weights")),
    Peers((PeerAddress(1, "::1", 1, "resnet8"), PeerAddress(2, "host.example", 65535, "cnn7"))),
    Payload(
        7,
        3,
        "weights",
        (
            _tensor("conv1.weight", "float32", (8, 3, 3, 3), 4),
            _tensor("conv1.bias", "float16", (8,), 2),
            _tensor("bn.num_batches_tracked", "int64", (), 8),
            WireTensor("mask", "bool", (5,), b"\x01\x00\x01\x01\x00"),
            _tensor("empty", "bfloat16", (0, 4), 2),
            _tensor("d", "float64", (3,), 8),
            _tensor("i", "int32", (1, 1, 1), 4),
            _tensor("u", "uint8", (13,), 1),
        ),
        {"samples": 600, "loss": 0.25, "tag": "local", "ok": True, "hist": [1, 2, [3]]},
    ),
    Payload(1, 0, "logits", ()),
    Heartbeat(1712.5),
    Bye("shutting down"),
]


def test_handshake_completes_with_the_same_session_id_on_both_sides() -> None:
    a = Connection(Role.INITIATOR, SECRET)
    b = Connection(Role.RESPONDER, SECRET)
    assert not a.handshake_done

    events_a, events_b = handshake(a, b)

    assert events_a == events_b and isinstance(events_a[0], HandshakeComplete)
    assert len(events_a) == 1 and a.handshake_done and b.handshake_done
    assert a.data_to_send() == b"" and b.data_to_send() == b""


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_both_ways(msg: Message) -> None:
    a, b = connected_pair()

    b.receive_data(wire_bytes(a, msg))
    a.receive_data(wire_bytes(b, msg))

    assert drain(b) == [msg]
    assert drain(a) == [msg]


def test_tensors_arrive_bit_exact_as_views_into_one_frame_buffer() -> None:
    a, b = connected_pair()
    sent = MESSAGES[2]
    assert isinstance(sent, Payload)

    b.receive_data(wire_bytes(a, sent))
    (got,) = drain(b)

    assert isinstance(got, Payload)
    for mine, theirs in zip(sent.tensors, got.tensors, strict=True):
        assert bytes(theirs.data) == bytes(mine.data)
        assert (theirs.name, theirs.dtype, theirs.shape) == (mine.name, mine.dtype, mine.shape)
    frames = {id(t.data.obj) for t in got.tensors if isinstance(t.data, memoryview)}
    assert len(frames) == 1


def test_big_tensors_are_sent_without_copies() -> None:
    a, _ = connected_pair()
    big = bytearray(os.urandom(4 * RECV_INTO_MIN))
    tensor = WireTensor("big", "float32", (RECV_INTO_MIN,), memoryview(big))

    buffers = a.send(Payload(1, 1, "weights", (tensor,)))

    assert any(isinstance(buf, memoryview) and buf.obj is big for buf in buffers)


def test_feeding_one_byte_at_a_time_gives_the_same_events() -> None:
    a = Connection(Role.INITIATOR, SECRET)
    b = Connection(Role.RESPONDER, SECRET)
    b_out = b.initiate()
    a_out = a.initiate()
    events: list[object] = []
    for byte in a_out:
        b.receive_data(bytes([byte]))
        events += drain(b)
    for byte in b_out:
        a.receive_data(bytes([byte]))
        events += drain(a)
    for byte in a.data_to_send():
        b.receive_data(bytes([byte]))
        events += drain(b)
    for byte in b.data_to_send():
        a.receive_data(bytes([byte]))
        assert drain(a) == [] or a.handshake_done
    stream = b"".join(wire_bytes(a, m) for m in MESSAGES)

    for i in range(len(stream)):
        b.receive_data(stream[i : i + 1])
        events += drain(b)

    assert [type(e) for e in events[:1]] == [HandshakeComplete]
    assert events[1:] == MESSAGES


def test_recv_into_path_fills_the_frame_in_place() -> None:
    a, b = connected_pair()
    tensor = _tensor("big", "uint8", (5 * RECV_INTO_MIN + 3,), 1)
    stream = memoryview(wire_bytes(a, Payload(1, 2, "features", (tensor,))))
    pos = 0
    views = []

    while (event := b.next_event()) is NEED_DATA:
        view = b.read_buffer()
        if view is None:
            b.receive_data(stream[pos : pos + 100])
            pos += 100
        else:
            views.append(view)
            n = min(len(view), 50_000, len(stream) - pos)  # like a short recv_into
            view[:n] = stream[pos : pos + n]
            b.commit(n)
            pos += n

    assert isinstance(event, Payload) and bytes(event.tensors[0].data) == bytes(tensor.data)
    assert isinstance(event.tensors[0].data, memoryview)
    assert event.tensors[0].data.obj is views[0].obj
    assert b.read_buffer() is None


def test_commit_is_checked() -> None:
    a, b = connected_pair()
    stream = wire_bytes(a, Payload(1, 2, "features", (_tensor("x", "uint8", (RECV_INTO_MIN,), 1),)))
    b.receive_data(stream[:100])
    assert b.next_event() is NEED_DATA
    view = b.read_buffer()
    assert view is not None

    with pytest.raises(LocalProtocolError, match="receive_data"):
        b.commit(0)
    with pytest.raises(LocalProtocolError):
        b.commit(len(view) + 1)


def test_clean_close_between_frames_gives_closed_repeatedly() -> None:
    a, b = connected_pair()
    b.receive_data(wire_bytes(a, Bye("done")))
    b.receive_data(b"")

    assert b.next_event() == Bye("done")
    assert b.next_event() == Closed()
    assert b.next_event() == Closed()
    with pytest.raises(LocalProtocolError, match="after EOF"):
        b.receive_data(b"more")


def test_close_mid_frame_says_how_much_arrived() -> None:
    a, b = connected_pair()
    frame = wire_bytes(a, Heartbeat(1.0))
    b.receive_data(frame[:30])
    b.receive_data(b"")

    with pytest.raises(RemoteProtocolError, match=f"30 of {len(frame)} bytes"):
        b.next_event()


def test_close_inside_a_header_says_how_much_arrived() -> None:
    a, b = connected_pair()
    b.receive_data(wire_bytes(a, Heartbeat(1.0))[:7])
    b.receive_data(b"")

    with pytest.raises(RemoteProtocolError, match="7 of 20 header bytes"):
        b.next_event()


def test_close_during_handshake_is_an_error() -> None:
    b = Connection(Role.RESPONDER, SECRET)
    b.initiate()
    b.receive_data(b"")

    with pytest.raises(RemoteProtocolError, match="during the handshake"):
        b.next_event()


def test_wrong_secret_fails_the_handshake_on_both_sides() -> None:
    a = Connection(Role.INITIATOR, SECRET)
    b = Connection(Role.RESPONDER, bytes(reversed(SECRET)))

    with pytest.raises(RemoteProtocolError, match="does not hold our shared secret"):
        handshake(a, b)
    with pytest.raises(RemoteProtocolError, match="does not hold our shared secret"):
        drain(b)
    assert not a.handshake_done and not b.handshake_done


def test_errors_are_sticky() -> None:
    _, b = connected_pair()
    b.receive_data(b"XXXX" + bytes(40))
    with pytest.raises(RemoteProtocolError, match="magic"):
        b.next_event()

    with pytest.raises(RemoteProtocolError, match="already failed"):
        b.next_event()


def test_two_initiators_are_told_apart() -> None:
    a = Connection(Role.INITIATOR, SECRET)
    c = Connection(Role.INITIATOR, SECRET)
    a.initiate()
    a.receive_data(c.initiate())

    with pytest.raises(RemoteProtocolError, match="also claims to be the initiator"):
        a.next_event()


def test_reflected_nonce_is_refused() -> None:
    a = Connection(Role.INITIATOR, SECRET)
    opening = a.initiate()
    tampered = opening[:20] + bytes([2]) + opening[21:]  # our nonce, with the other role

    a.receive_data(tampered)

    with pytest.raises(RemoteProtocolError, match="reflection"):
        a.next_event()


def test_local_misuse_raises_local_errors() -> None:
    a = Connection(Role.INITIATOR, SECRET)
    with pytest.raises(LocalProtocolError, match="initiate"):
        a.next_event()
    a.initiate()
    with pytest.raises(LocalProtocolError, match="only be called once"):
        a.initiate()
    with pytest.raises(LocalProtocolError, match="before the handshake"):
        a.send(Heartbeat(1.0))
    with pytest.raises(LocalProtocolError, match="not a wire message"):
        connected_pair()[0].send("hello")  # type: ignore[arg-type]


def test_messages_before_the_handshake_are_refused() -> None:
    a, _ = connected_pair()
    b = Connection(Role.RESPONDER, SECRET)
    b.initiate()

    b.receive_data(wire_bytes(a, Hello(1, "h", 1, "cnn", 1, ())))

    with pytest.raises(RemoteProtocolError, match="expected NONCE during the handshake, got HELLO"):
        b.next_event()


def test_proof_is_prepended_to_the_first_send_if_not_yet_collected() -> None:
    a = Connection(Role.INITIATOR, SECRET)
    b = Connection(Role.RESPONDER, SECRET)
    b.receive_data(a.initiate())
    a.receive_data(b.initiate())
    assert drain(b) == []
    assert drain(a) == []
    b.receive_data(a.data_to_send())  # a's proof
    (done,) = drain(b)
    assert isinstance(done, HandshakeComplete)

    a.receive_data(b"".join(bytes(x) for x in b.send(Heartbeat(2.0))))  # b never drained its proof

    assert drain(a) == [done, Heartbeat(2.0)]


# ------------------------------------------------------------------ attacks on frames


def test_altered_frame_is_refused() -> None:
    a, b = connected_pair()
    frame = bytearray(wire_bytes(a, Hello(1, "h", 1, "cnn", 1, ())))
    frame[40] ^= 0x01

    b.receive_data(frame)

    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        b.next_event()


def test_altered_tensor_byte_is_refused() -> None:
    a, b = connected_pair()
    frame = bytearray(wire_bytes(a, MESSAGES[2]))
    frame[-40] ^= 0x80

    b.receive_data(frame)

    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        b.next_event()


def test_replayed_frame_is_refused() -> None:
    a, b = connected_pair()
    frame = wire_bytes(a, Heartbeat(1.0))
    b.receive_data(frame)
    assert drain(b) == [Heartbeat(1.0)]

    b.receive_data(frame)

    with pytest.raises(RemoteProtocolError, match="frame #1 failed authentication"):
        b.next_event()


def test_reordered_frames_are_refused() -> None:
    a, b = connected_pair()
    first = wire_bytes(a, Heartbeat(1.0))
    second = wire_bytes(a, Heartbeat(2.0))

    b.receive_data(second + first)

    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        b.next_event()


def test_reflected_frame_is_refused() -> None:
    a, _ = connected_pair()
    frame = wire_bytes(a, Heartbeat(1.0))

    a.receive_data(frame)  # an attacker bounces a's own frame back to it

    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        a.next_event()


def test_frame_from_another_session_is_refused() -> None:
    a1, _ = connected_pair()
    _, b2 = connected_pair()

    b2.receive_data(wire_bytes(a1, Heartbeat(1.0)))

    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        b2.next_event()


def test_replayed_handshake_is_refused() -> None:
    a = Connection(Role.INITIATOR, SECRET)
    b = Connection(Role.RESPONDER, SECRET)
    opening = a.initiate()
    b.receive_data(opening)
    a.receive_data(b.initiate())
    drain(a)
    recorded = opening + a.data_to_send()  # an eavesdropper records the initiator's flights

    victim = Connection(Role.RESPONDER, SECRET)
    victim.initiate()
    victim.receive_data(recorded)

    with pytest.raises(RemoteProtocolError, match="handshake failed"):
        drain(victim)


def test_every_error_is_a_protocol_error() -> None:
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert RemoteProtocolError("x").remote and not LocalProtocolError("x").remote


def test_header_is_little_endian_and_documented_size() -> None:
    a, _ = connected_pair()
    frame = wire_bytes(a, Bye("x"))

    magic, version, msg_type, flags, meta_len, tensor_len = struct.unpack_from("<4sBBHIQ", frame)

    assert (magic, version, msg_type, flags, tensor_len) == (b"FP2P", 2, 0x14, 0, 0)
    assert len(frame) == 20 + meta_len + 16


def test_frame_in_progress_tells_a_partial_frame_from_an_idle_line() -> None:
    a, b = connected_pair()
    frame = wire_bytes(a, Heartbeat(1.0))
    assert not b.frame_in_progress

    b.receive_data(frame[:5])
    assert b.next_event() is NEED_DATA and b.frame_in_progress
    b.receive_data(frame[5:25])
    assert b.next_event() is NEED_DATA and b.frame_in_progress
    b.receive_data(frame[25:])

    assert b.next_event() == Heartbeat(1.0)
    assert b.next_event() is NEED_DATA and not b.frame_in_progress


def _feed_in_chunks(conn: Connection, stream: bytes, chunk: int = 50_000) -> list[object]:
    """Drive conn the way a transport does: recv_into the frame buffer, else receive_data."""
    data, pos, events = memoryview(stream), 0, []
    while pos < len(data):
        view = conn.read_buffer()
        if view is None:
            conn.receive_data(data[pos : pos + 100])
            pos += 100
        else:
            n = min(len(view), chunk, len(data) - pos)
            view[:n] = data[pos : pos + n]
            conn.commit(n)
            pos += n
        events += drain(conn)
    return events


@pytest.mark.parametrize("where", [100, 300_000, -17, -1])
def test_streamed_verification_hands_out_nothing_of_an_altered_frame(where: int) -> None:
    a, b = connected_pair()
    frame = bytearray(
        wire_bytes(a, Payload(1, 2, "weights", (_tensor("w", "uint8", (400_000,), 1),)))
    )
    frame[where] ^= 0x01  # a tensor byte (early or late) or the tag (first or last byte)
    data, pos = memoryview(frame), 0

    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        while True:
            view = b.read_buffer()
            if view is None:
                piece = data[pos : pos + 100]
                b.receive_data(piece)
            else:
                piece = data[pos : pos + min(len(view), 30_000)]
                view[: len(piece)] = piece
                b.commit(len(piece))
            pos += len(piece)
            assert b.next_event() is NEED_DATA  # nothing before the whole frame is checked
    assert pos == len(frame)


def test_streamed_verification_accepts_any_chunking() -> None:
    a, b = connected_pair()
    msgs = [Payload(1, r, "weights", (_tensor("w", "uint8", (300_000 + r,), 1),)) for r in range(3)]
    stream = b"".join(wire_bytes(a, m) for m in [*msgs, Heartbeat(1.0), *msgs])

    for chunk in (1_000, 65_537, 10**7):
        a2, b2 = connected_pair()
        got = _feed_in_chunks(
            b2, b"".join(wire_bytes(a2, m) for m in [*msgs, Heartbeat(1.0)]), chunk
        )
        assert got == [*msgs, Heartbeat(1.0)]
    assert _feed_in_chunks(b, stream) == [*msgs, Heartbeat(1.0), *msgs]


def test_frame_buffers_are_reused_only_once_nothing_refers_to_them() -> None:
    a, b = connected_pair()
    sent = [Payload(1, r, "weights", (_tensor("w", "uint8", (400_000,), 1),)) for r in range(8)]
    (first,) = _feed_in_chunks(b, wire_bytes(a, sent[0]))
    assert isinstance(first, Payload)
    held = first.tensors[0].data  # the application keeps one tensor of the first message
    del first
    (second,) = _feed_in_chunks(b, wire_bytes(a, sent[1]))
    assert isinstance(second, Payload)
    array = np.frombuffer(second.tensors[0].data, np.uint8)[1:]  # ... and an array of another
    del second
    buffers = []

    for msg in sent[2:]:
        (got,) = _feed_in_chunks(b, wire_bytes(a, msg))
        assert got == msg
        assert isinstance(got, Payload) and isinstance(got.tensors[0].data, memoryview)
        buffers.append(id(got.tensors[0].data.obj))
        del got

    assert bytes(held) == bytes(sent[0].tensors[0].data)  # never overwritten
    assert array.tobytes() == bytes(sent[1].tensors[0].data)[1:]
    assert isinstance(held, memoryview) and id(held.obj) not in buffers
    assert len(set(buffers)) < len(buffers)  # released buffers were reused


def test_buffer_reuse_can_be_turned_off() -> None:
    a, b = Connection(Role.INITIATOR, SECRET), Connection(Role.RESPONDER, SECRET, recv_buffers=0)
    handshake(a, b)
    sent = [Payload(1, r, "weights", (_tensor("w", "uint8", (400_000,), 1),)) for r in range(3)]
    kept = []

    for msg in sent:
        (got,) = _feed_in_chunks(b, wire_bytes(a, msg))
        kept.append(got)

    assert kept == sent and not b._pool
    with pytest.raises(LocalProtocolError, match="recv_buffers"):
        Connection(Role.INITIATOR, SECRET, recv_buffers=-1)
