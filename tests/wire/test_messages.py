import math
import struct

import pytest

from fedp2p.wire import (
    Bye,
    Heartbeat,
    Hello,
    LocalProtocolError,
    Payload,
    PeerAddress,
    Peers,
    WireTensor,
)


def test_wire_tensor_normalises_views_to_flat_bytes() -> None:
    floats = memoryview(bytearray(struct.pack("<4f", 1, 2, 3, math.nan))).cast("f")

    tensor = WireTensor("w", "float32", [2, 2], floats)  # type: ignore[arg-type]

    assert tensor.shape == (2, 2)
    assert isinstance(tensor.data, memoryview) and tensor.data.format == "B"
    assert tensor.nbytes == 16
    assert tensor == WireTensor("w", "float32", (2, 2), floats.tobytes())  # NaN compares bytewise


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "object"}, "not one of"),
        ({"dtype": "complex64"}, "not one of"),
        ({"shape": (2, 3)}, "needs 24"),
        ({"shape": (-1, 2)}, "outside"),
        ({"shape": (True, 2)}, "must be an int"),
        ({"name": ""}, "must not be empty"),
        ({"name": "a\nb"}, "non-printable"),
        ({"data": "text"}, "bytes or memoryview"),
    ],
)
def test_wire_tensor_refuses_inconsistent_tensors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "w", "dtype": "float32", "shape": (2,), "data": bytes(8)}
    args.update(kwargs)

    with pytest.raises(LocalProtocolError, match=message):
        WireTensor(**args)  # type: ignore[arg-type]


def test_bool_tensors_hold_only_zero_and_one() -> None:
    assert WireTensor("m", "bool", (3,), b"\x00\x01\x01").nbytes == 3
    with pytest.raises(LocalProtocolError, match="0/1"):
        WireTensor("m", "bool", (2,), b"\x00\x02")


def test_zero_sized_and_scalar_tensors_are_fine() -> None:
    assert WireTensor("empty", "int64", (0, 5), b"").nbytes == 0
    assert WireTensor("scalar", "float64", (), bytes(8)).nbytes == 8


def test_non_contiguous_views_are_refused() -> None:
    strided = memoryview(bytes(16))[::2]

    with pytest.raises(LocalProtocolError, match="contiguous"):
        WireTensor("w", "uint8", (8,), strided)


def test_payload_freezes_meta_and_refuses_bad_values() -> None:
    payload = Payload(1, 0, "logits", (), {"a": [1, [2.5, "x"]], "b": None})

    assert payload.meta == {"a": (1, (2.5, "x")), "b": None}
    with pytest.raises(TypeError):
        payload.meta["c"] = 1  # type: ignore[index]
    with pytest.raises(LocalProtocolError, match="kind"):
        Payload(1, 0, "gradients", ())
    with pytest.raises(LocalProtocolError, match="finite"):
        Payload(1, 0, "weights", (), {"x": math.inf})
    with pytest.raises(LocalProtocolError, match="must be str, int"):
        Payload(1, 0, "weights", (), {"x": {"nested": 1}})  # type: ignore[dict-item]
    with pytest.raises(LocalProtocolError, match="twice"):
        t = WireTensor("w", "uint8", (1,), b"x")
        Payload(1, 0, "weights", (t, t))


def test_other_messages_check_their_fields() -> None:
    with pytest.raises(LocalProtocolError, match="listen_port"):
        Hello(1, "h", 70000, "cnn", 1, ())
    with pytest.raises(LocalProtocolError, match="peer_id"):
        PeerAddress(-1, "h", 1, "cnn")
    with pytest.raises(LocalProtocolError, match="PeerAddress"):
        Peers(("h",))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="finite"):
        Heartbeat(math.nan)
    with pytest.raises(LocalProtocolError, match="must be a str"):
        Bye(3)  # type: ignore[arg-type]
    assert Hello(1, "h", 1, "cnn", 1, ["x"]).capabilities == ("x",)  # type: ignore[arg-type]
    assert Heartbeat(3).sent_at == 3.0
