"""Frame layout: a fixed little-endian header, JSON metadata, raw tensor bytes, then a MAC.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic b"FP2P"
    4       1     protocol version (2; version 1 used an HMAC-SHA256 trailer)
    5       1     message type (MsgType)
    6       2     flags (must be 0)
    8       4     metadata length M
    12      8     tensor-section length T
    20      M     metadata: UTF-8 JSON object (handshake frames: raw bytes)
    20+M    T     tensor section: each tensor's raw bytes at a 64-byte aligned offset
    20+M+T  16    Poly1305 tag under a one-time key (only after the handshake; see ``auth``)

Tensor descriptors (name, dtype, shape) live in the metadata; offsets are not sent but
recomputed from the byte counts, so there is exactly one valid layout and no overlap.
Every length in a header is checked against ``Limits`` before any buffer is allocated.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedp2p.wire.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from fedp2p.wire.messages import (
    DTYPES,
    MAX_DIM,
    Bye,
    Heartbeat,
    Hello,
    Message,
    Payload,
    PeerAddress,
    Peers,
    WireTensor,
    check_int,
)

MAGIC = b"FP2P"
PROTOCOL_VERSION = 2
HEADER = struct.Struct("<4sBBHIQ")
HEADER_SIZE = HEADER.size
ALIGN = 64  # tensor offsets, counted from the start of the frame
COALESCE_BELOW = 64 * 1024  # pieces smaller than this are joined into one send buffer
_ZEROS = bytes(ALIGN)


class MsgType(enum.IntEnum):
    """Message type byte; the handshake types are only valid before authentication."""

    NONCE = 0x01
    PROOF = 0x02
    HELLO = 0x10
    PEERS = 0x11
    PAYLOAD = 0x12
    HEARTBEAT = 0x13
    BYE = 0x14


HANDSHAKE_TYPES = frozenset({MsgType.NONCE, MsgType.PROOF})
_KNOWN_TYPES = frozenset(int(t) for t in MsgType)


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what a peer may make us parse or allocate; checked before allocating."""

    max_frame_bytes: int = 256 * 2**20
    max_meta_bytes: int = 2**20
    max_tensors: int = 1024
    max_ndim: int = 8
    max_str_len: int = 1024
    max_items: int = 4096  # addresses per Peers, capabilities, keys in Payload.meta

    def __post_init__(self) -> None:
        """Refuse limits that make no sense, so misconfiguration fails at startup."""
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, not {value!r}")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class FrameHeader:
    """A parsed, limit-checked header: enough to allocate exactly one frame buffer."""

    msg_type: MsgType
    meta_len: int
    tensor_len: int
    trailer_len: int

    @property
    def frame_len(self) -> int:
        """Return the whole frame's size in bytes, header and trailer included."""
        return HEADER_SIZE + self.meta_len + self.tensor_len + self.trailer_len


def pack_header(msg_type: MsgType, meta_len: int, tensor_len: int) -> bytes:
    """Build the 20-byte header of a frame."""
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, int(msg_type), 0, meta_len, tensor_len)


def parse_header(
    data: bytes | bytearray | memoryview, limits: Limits, trailer_len: int
) -> FrameHeader:
    """Check a received header against the protocol and the limits; raise before any allocation."""
    magic, version, type_byte, flags, meta_len, tensor_len = HEADER.unpack(data)
    if magic != MAGIC:
        raise RemoteProtocolError(f"bad magic {magic!r}: the peer does not speak fedp2p")
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"unsupported protocol version {version} (this peer speaks {PROTOCOL_VERSION})"
        )
    if type_byte not in _KNOWN_TYPES:
        raise RemoteProtocolError(f"unknown message type 0x{type_byte:02x}")
    msg_type = MsgType(type_byte)
    if flags:
        raise RemoteProtocolError(f"unsupported flags 0x{flags:04x} on {msg_type.name}")
    if meta_len > limits.max_meta_bytes:
        raise RemoteProtocolError(
            f"{msg_type.name} metadata of {meta_len} bytes exceeds the limit of "
            f"{limits.max_meta_bytes}"
        )
    if tensor_len and msg_type is not MsgType.PAYLOAD:
        raise RemoteProtocolError(f"{msg_type.name} must not carry a tensor section")
    header = FrameHeader(msg_type, meta_len, tensor_len, trailer_len)
    if header.frame_len > limits.max_frame_bytes:
        raise RemoteProtocolError(
            f"{msg_type.name} frame of {header.frame_len} bytes exceeds the limit of "
            f"{limits.max_frame_bytes}"
        )
    if tensor_len and (HEADER_SIZE + meta_len) % ALIGN:
        raise RemoteProtocolError("tensor section does not start at an aligned offset")
    return header


# ---------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedFrame:
    """A frame without its MAC: header and metadata in one piece, then the tensor pieces."""

    head: bytes
    tensor_parts: tuple[bytes | memoryview, ...]


def _dump_json(doc: Mapping[str, Any]) -> bytes:
    """Encode metadata as compact ASCII JSON; NaN and infinities are refused."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _message_doc(msg: Message) -> tuple[MsgType, dict[str, Any]]:
    """Map a message to its type byte and its JSON document."""
    if isinstance(msg, Hello):
        return MsgType.HELLO, {
            "peer_id": msg.peer_id,
            "listen_host": msg.listen_host,
            "listen_port": msg.listen_port,
            "arch": msg.arch,
            "version": msg.version,
            "capabilities": list(msg.capabilities),
        }
    if isinstance(msg, Peers):
        return MsgType.PEERS, {
            "addresses": [
                {"peer_id": a.peer_id, "host": a.host, "port": a.port, "arch": a.arch}
                for a in msg.addresses
            ]
        }
    if isinstance(msg, Payload):
        return MsgType.PAYLOAD, {
            "sender": msg.sender,
            "round": msg.round,
            "kind": msg.kind,
            "meta": dict(msg.meta),
            "tensors": [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in msg.tensors
            ],
        }
    if isinstance(msg, Heartbeat):
        return MsgType.HEARTBEAT, {"sent_at": msg.sent_at}
    if isinstance(msg, Bye):
        return MsgType.BYE, {"reason": msg.reason}
    raise LocalProtocolError(f"cannot send a {type(msg).__name__}; it is not a wire message")


def encode_message(msg: Message, limits: Limits, trailer_len: int) -> EncodedFrame:
    """Lay out a message as header, metadata and tensor pieces; tensor bytes are not copied."""
    check_limits(msg, limits, LocalProtocolError)
    msg_type, doc = _message_doc(msg)
    meta = _dump_json(doc)
    parts: list[bytes | memoryview] = []
    tensor_len = 0
    if isinstance(msg, Payload) and msg.tensors:
        meta += b" " * (-(HEADER_SIZE + len(meta)) % ALIGN)  # JSON ignores trailing spaces
        for tensor in msg.tensors:
            pad = -tensor_len % ALIGN
            if pad:
                parts.append(_ZEROS[:pad])
            parts.append(tensor.data)
            tensor_len += pad + tensor.nbytes
    if len(meta) > limits.max_meta_bytes:
        raise LocalProtocolError(
            f"{msg_type.name} metadata of {len(meta)} bytes exceeds the limit of "
            f"{limits.max_meta_bytes}"
        )
    frame_len = HEADER_SIZE + len(meta) + tensor_len + trailer_len
    if frame_len > limits.max_frame_bytes:
        raise LocalProtocolError(
            f"{msg_type.name} frame of {frame_len} bytes exceeds the limit of "
            f"{limits.max_frame_bytes}"
        )
    return EncodedFrame(pack_header(msg_type, len(meta), tensor_len) + meta, tuple(parts))


def coalesce(parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """Join runs of small pieces into one buffer, so small frames cost one send, big ones no copy."""
    out: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for part in parts:
        if len(part) >= COALESCE_BELOW:
            if small:
                out.append(b"".join(small))
                small = []
            out.append(part)
        elif part:
            small.append(part)
    if small:
        out.append(b"".join(small))
    return out


# ---------------------------------------------------------------------------- limits


def check_limits(msg: Message, limits: Limits, error: type[ProtocolError]) -> None:
    """Refuse a message whose counts or string lengths exceed the limits."""

    def text(what: str, value: str) -> None:
        if len(value) > limits.max_str_len:
            raise error(f"{what} has {len(value)} characters; the limit is {limits.max_str_len}")

    def count(what: str, n: int, most: int) -> None:
        if n > most:
            raise error(f"{what} has {n} items; the limit is {most}")

    if isinstance(msg, Hello):
        text("listen_host", msg.listen_host)
        text("arch", msg.arch)
        count("capabilities", len(msg.capabilities), limits.max_items)
        for capability in msg.capabilities:
            text("capability", capability)
    elif isinstance(msg, Peers):
        count("addresses", len(msg.addresses), limits.max_items)
        for address in msg.addresses:
            text("host", address.host)
            text("arch", address.arch)
    elif isinstance(msg, Payload):
        count("tensors", len(msg.tensors), limits.max_tensors)
        for tensor in msg.tensors:
            text("tensor name", tensor.name)
            count(f"shape of tensor {tensor.name!r}", len(tensor.shape), limits.max_ndim)
        count("meta", len(msg.meta), limits.max_items)
        for key in msg.meta:
            text("meta key", key)
    elif isinstance(msg, Bye):
        text("reason", msg.reason)


# ---------------------------------------------------------------------------- decoding


class _JsonError(ValueError):
    """Raised inside JSON hooks; turned into RemoteProtocolError by the caller."""


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse duplicate keys, which different parsers resolve differently."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _JsonError("duplicate key in a JSON object")
    return result


def _refuse_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON."""
    raise _JsonError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    """Refuse floats that overflow to infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise _JsonError(f"float {text[:20]} is out of range")
    return value


def _small_int(text: str) -> int:
    """Refuse integers too long to be a 64-bit value before converting them."""
    if len(text) > 20:
        raise _JsonError(f"integer {text[:20]}... is too long")
    return int(text)


def load_json(raw: bytes | memoryview) -> dict[str, Any]:
    """Parse metadata as a strict JSON object; anything else is the peer's error."""
    try:
        doc = json.loads(
            bytes(raw).decode("utf-8"),
            object_pairs_hook=_pairs_without_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_small_int,
        )
    except UnicodeDecodeError:
        raise RemoteProtocolError("metadata is not valid UTF-8") from None
    except RecursionError:
        raise RemoteProtocolError("metadata nests too deeply") from None
    except ValueError as exc:
        raise RemoteProtocolError(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RemoteProtocolError(f"metadata must be a JSON object, not {type(doc).__name__}")
    return doc


def _fields(obj: object, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Require a JSON object with exactly these keys."""
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"{what} must be a JSON object")
    if obj.keys() != set(keys):
        missing = sorted(set(keys) - obj.keys())
        unexpected = sorted(obj.keys() - set(keys))[:5]
        raise RemoteProtocolError(f"{what}: missing fields {missing}, unexpected {unexpected}")
    return obj


def _list(obj: object, what: str, most: int) -> list[Any]:
    """Require a JSON array of at most ``most`` items."""
    if not isinstance(obj, list):
        raise RemoteProtocolError(f"{what} must be a JSON array")
    if len(obj) > most:
        raise RemoteProtocolError(f"{what} has {len(obj)} items; the limit is {most}")
    return obj


def _decode_tensors(
    descriptors: list[Any], section: memoryview, limits: Limits
) -> list[WireTensor]:
    """Cut the tensor section into zero-copy views, after checking every descriptor against it."""
    tensors: list[WireTensor] = []
    end = 0  # end of the previous tensor, relative to the section start (itself aligned)
    for i, descriptor in enumerate(descriptors):
        fields = _fields(descriptor, f"tensor descriptor {i}", ("name", "dtype", "shape"))
        dtype = fields["dtype"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise RemoteProtocolError(f"tensor descriptor {i}: dtype {dtype!r} is not allowed")
        shape = _list(fields["shape"], f"shape of tensor descriptor {i}", limits.max_ndim)
        for dim in shape:
            check_int(f"tensor descriptor {i} dim", dim, 0, MAX_DIM)
        nbytes = math.prod(shape) * DTYPES[dtype]
        start = end + (-end % ALIGN)
        if start + nbytes > len(section):
            raise RemoteProtocolError(
                f"tensor descriptor {i} needs {nbytes} bytes at offset {start}, past the end "
                f"of the {len(section)}-byte tensor section"
            )
        if any(section[end:start]):
            raise RemoteProtocolError(f"non-zero padding before tensor descriptor {i}")
        tensors.append(
            WireTensor(fields["name"], dtype, tuple(shape), section[start : start + nbytes])
        )
        end = start + nbytes
    if end != len(section):
        raise RemoteProtocolError(f"tensor section has {len(section) - end} unused trailing bytes")
    return tensors


def _build(header: FrameHeader, body: memoryview, limits: Limits) -> Message:
    """Turn a frame body into a message; constructors raise LocalProtocolError on bad values."""
    doc = load_json(body[: header.meta_len])
    msg_type = header.msg_type
    if msg_type is MsgType.HELLO:
        f = _fields(
            doc,
            "Hello",
            ("peer_id", "listen_host", "listen_port", "arch", "version", "capabilities"),
        )
        _list(f["capabilities"], "capabilities", limits.max_items)
        return Hello(**f)
    if msg_type is MsgType.PEERS:
        f = _fields(doc, "Peers", ("addresses",))
        addresses = _list(f["addresses"], "addresses", limits.max_items)
        keys = ("peer_id", "host", "port", "arch")
        return Peers(tuple(PeerAddress(**_fields(a, "peer address", keys)) for a in addresses))
    if msg_type is MsgType.PAYLOAD:
        f = _fields(doc, "Payload", ("sender", "round", "kind", "meta", "tensors"))
        descriptors = _list(f["tensors"], "tensors", limits.max_tensors)
        if not isinstance(f["meta"], dict) or len(f["meta"]) > limits.max_items:
            raise RemoteProtocolError(
                f"meta must be a JSON object of at most {limits.max_items} keys"
            )
        tensors = _decode_tensors(descriptors, body[header.meta_len :], limits)
        return Payload(f["sender"], f["round"], f["kind"], tuple(tensors), f["meta"])
    if msg_type is MsgType.HEARTBEAT:
        return Heartbeat(**_fields(doc, "Heartbeat", ("sent_at",)))
    if msg_type is MsgType.BYE:
        return Bye(**_fields(doc, "Bye", ("reason",)))
    raise RemoteProtocolError(f"{msg_type.name} is not a message")


def decode_message(header: FrameHeader, body: memoryview, limits: Limits) -> Message:
    """Decode a frame body (metadata and tensor section); tensors are views into ``body``."""
    try:
        msg = _build(header, body, limits)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"{header.msg_type.name}: {exc}") from None
    check_limits(msg, limits, RemoteProtocolError)
    return msg
