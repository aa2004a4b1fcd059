"""Messages peers exchange, as frozen dataclasses that refuse invalid values when built.

Construction checks the rules that hold for every connection (dtype allow-list, byte counts,
port range, finite floats). Size limits are per connection and are checked by ``frames``.
A bad value raises ``LocalProtocolError``; the decoder turns that into ``RemoteProtocolError``.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from fedp2p.wire.errors import LocalProtocolError

# Bytes per element of each dtype that may travel; anything else is refused.
DTYPES: Mapping[str, int] = types.MappingProxyType(
    {
        "float32": 4,
        "float16": 2,
        "bfloat16": 2,
        "float64": 8,
        "int64": 8,
        "int32": 4,
        "uint8": 1,
        "bool": 1,
    }
)

# What a Payload carries: full weights, or knowledge-distillation signals of some kind.
KINDS: frozenset[str] = frozenset({"weights", "logits", "features", "prototypes"})

MAX_ID = 2**63 - 1  # ids and counters fit a signed 64-bit integer everywhere
MAX_DIM = 2**62  # one dimension of a shape; the byte count check bounds the product anyway
MAX_META_DEPTH = 4  # lists nested in Payload.meta

# A value in Payload.meta: a JSON scalar or a (nested) list of them; stored lists become tuples.
MetaValue: TypeAlias = str | int | float | bool | list["MetaValue"] | tuple["MetaValue", ...] | None


def check_text(what: str, value: object, *, allow_empty: bool = True) -> str:
    """Refuse non-strings and control/surrogate characters, which would corrupt logs and files."""
    if not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be a str, not {type(value).__name__}")
    if not value and not allow_empty:
        raise LocalProtocolError(f"{what} must not be empty")
    if not value.isprintable():
        raise LocalProtocolError(f"{what} contains non-printable characters: {value[:40]!r}")
    return value


def check_int(what: str, value: object, lo: int = 0, hi: int = MAX_ID) -> int:
    """Refuse bools, non-ints and out-of-range ints, so ids stay 64-bit everywhere."""
    if type(value) is not int:
        raise LocalProtocolError(f"{what} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise LocalProtocolError(f"{what} = {value} is outside [{lo}, {hi}]")
    return value


def check_float(what: str, value: object) -> float:
    """Refuse NaN and infinities, which JSON cannot carry and which poison arithmetic."""
    if type(value) not in (int, float):
        raise LocalProtocolError(f"{what} must be a float, not {type(value).__name__}")
    result = float(value)  # type: ignore[arg-type]
    if not math.isfinite(result):
        raise LocalProtocolError(f"{what} must be finite, not {result}")
    return result


def _freeze_meta_value(key: str, value: object, depth: int) -> MetaValue:
    """Check one meta value and turn lists into tuples, so messages stay immutable and comparable."""
    if value is None or type(value) in (str, bool, int):
        if type(value) is int:
            check_int(f"meta[{key!r}]", value, -MAX_ID, MAX_ID)
        return value  # type: ignore[return-value]
    if type(value) is float:
        return check_float(f"meta[{key!r}]", value)
    if isinstance(value, (list, tuple)):
        if depth >= MAX_META_DEPTH:
            raise LocalProtocolError(f"meta[{key!r}] nests lists deeper than {MAX_META_DEPTH}")
        return tuple(_freeze_meta_value(key, item, depth + 1) for item in value)
    raise LocalProtocolError(
        f"meta[{key!r}] must be str, int, float, bool, None or a list of them, "
        f"not {type(value).__name__}"
    )


def freeze_meta(meta: object) -> Mapping[str, MetaValue]:
    """Check a Payload.meta mapping and return a read-only copy with lists as tuples."""
    if not isinstance(meta, Mapping):
        raise LocalProtocolError(f"meta must be a mapping, not {type(meta).__name__}")
    frozen: dict[str, MetaValue] = {}
    for key, value in meta.items():
        check_text("meta key", key)
        frozen[key] = _freeze_meta_value(key, value, 0)
    return types.MappingProxyType(frozen)


def _as_byte_view(name: str, data: object) -> bytes | memoryview:
    """Give tensor bytes as bytes or a flat unsigned-byte view, so length and equality are bytewise."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        view = memoryview(data)
        if not view.c_contiguous:
            raise LocalProtocolError(f"tensor {name!r}: data must be C-contiguous")
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    raise LocalProtocolError(
        f"tensor {name!r}: data must be bytes or memoryview, not {type(data).__name__}"
    )


def _has_only_bool_bytes(data: bytes | memoryview) -> bool:
    """Tell whether every byte is 0 or 1, since other values are undefined as C++ bools."""
    raw = data if isinstance(data, bytes) else data.tobytes()
    return not raw.translate(None, b"\x00\x01")


@dataclass(frozen=True)
class WireTensor:
    """A named tensor as dtype, shape and raw little-endian C-order bytes; no torch needed."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes | memoryview = field(repr=False)

    def __post_init__(self) -> None:
        """Refuse a tensor whose bytes do not match its dtype and shape."""
        check_text("tensor name", self.name, allow_empty=False)
        if self.dtype not in DTYPES:
            raise LocalProtocolError(
                f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {sorted(DTYPES)}"
            )
        if not isinstance(self.shape, (tuple, list)):
            raise LocalProtocolError(f"tensor {self.name!r}: shape must be a tuple of ints")
        shape = tuple(check_int(f"tensor {self.name!r} dim", d, 0, MAX_DIM) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        data = _as_byte_view(self.name, self.data)
        object.__setattr__(self, "data", data)
        if len(data) != self.expected_nbytes(self.dtype, shape):
            raise LocalProtocolError(
                f"tensor {self.name!r}: {len(data)} bytes of data, but shape {shape} of "
                f"{self.dtype} needs {self.expected_nbytes(self.dtype, shape)}"
            )
        if self.dtype == "bool" and not _has_only_bool_bytes(data):
            raise LocalProtocolError(f"tensor {self.name!r}: bool data holds bytes other than 0/1")

    @staticmethod
    def expected_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
        """Return prod(shape) * itemsize, the only byte count a tensor of this kind may have."""
        return math.prod(shape) * DTYPES[dtype]

    @property
    def nbytes(self) -> int:
        """Return the number of data bytes, which always equals prod(shape) * itemsize."""
        return len(self.data)


@dataclass(frozen=True)
class Hello:
    """First message on a connection: who the sender is and where it listens."""

    peer_id: int
    listen_host: str
    listen_port: int
    arch: str
    version: int
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse ids, ports and names that could not be routed or logged safely."""
        check_int("peer_id", self.peer_id)
        check_text("listen_host", self.listen_host)
        check_int("listen_port", self.listen_port, 0, 65535)
        check_text("arch", self.arch)
        check_int("version", self.version, 0, 2**31 - 1)
        if not isinstance(self.capabilities, (tuple, list)):
            raise LocalProtocolError("capabilities must be a tuple of str")
        caps = tuple(check_text("capability", c) for c in self.capabilities)
        object.__setattr__(self, "capabilities", caps)


@dataclass(frozen=True)
class PeerAddress:
    """Where another peer can be reached, and which model architecture it trains."""

    peer_id: int
    host: str
    port: int
    arch: str

    def __post_init__(self) -> None:
        """Refuse ids, ports and names that could not be routed or logged safely."""
        check_int("peer_id", self.peer_id)
        check_text("host", self.host)
        check_int("port", self.port, 0, 65535)
        check_text("arch", self.arch)


@dataclass(frozen=True)
class Peers:
    """Peer exchange: addresses the sender knows, so the overlay can grow without a server."""

    addresses: tuple[PeerAddress, ...]

    def __post_init__(self) -> None:
        """Refuse anything but PeerAddress items."""
        if not isinstance(self.addresses, (tuple, list)):
            raise LocalProtocolError("addresses must be a tuple of PeerAddress")
        for address in self.addresses:
            if not isinstance(address, PeerAddress):
                raise LocalProtocolError(
                    f"addresses holds a {type(address).__name__}, not a PeerAddress"
                )
        object.__setattr__(self, "addresses", tuple(self.addresses))


@dataclass(frozen=True)
class Payload:
    """One learning update (weights or distillation signals) for one round."""

    sender: int
    round: int
    kind: str
    tensors: tuple[WireTensor, ...]
    meta: Mapping[str, MetaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse unknown kinds and duplicate tensor names; freeze meta."""
        check_int("sender", self.sender)
        check_int("round", self.round)
        if self.kind not in KINDS:
            raise LocalProtocolError(f"kind {self.kind!r} is not one of {sorted(KINDS)}")
        if not isinstance(self.tensors, (tuple, list)):
            raise LocalProtocolError("tensors must be a tuple of WireTensor")
        names: set[str] = set()
        for tensor in self.tensors:
            if not isinstance(tensor, WireTensor):
                raise LocalProtocolError(
                    f"tensors holds a {type(tensor).__name__}, not a WireTensor"
                )
            if tensor.name in names:
                raise LocalProtocolError(f"tensor name {tensor.name!r} appears twice")
            names.add(tensor.name)
        object.__setattr__(self, "tensors", tuple(self.tensors))
        object.__setattr__(self, "meta", freeze_meta(self.meta))


@dataclass(frozen=True)
class Heartbeat:
    """Liveness probe; sent_at is the sender's wall clock, for round-trip estimates."""

    sent_at: float

    def __post_init__(self) -> None:
        """Refuse non-finite times."""
        object.__setattr__(self, "sent_at", check_float("sent_at", self.sent_at))


@dataclass(frozen=True)
class Bye:
    """Graceful goodbye, so the other side can tell a clean exit from a crash."""

    reason: str = ""

    def __post_init__(self) -> None:
        """Refuse non-printable reasons."""
        check_text("reason", self.reason)


Message: TypeAlias = Hello | Peers | Payload | Heartbeat | Bye
