"""Torch tensors to and from WireTensor: the only module where torch and the wire protocol meet.

Tensors travel as dtype, shape and raw little-endian bytes. Nothing received is unpickled or
`torch.load`-ed, and a received state is loaded only if every name, dtype and shape matches the
receiver's own model exactly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fedp2p.wire.messages import DTYPES, WireTensor

log = logging.getLogger(__name__)

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
WIRE_DTYPES: dict[torch.dtype, str] = {dt: name for name, dt in TORCH_DTYPES.items()}
assert set(TORCH_DTYPES) == set(DTYPES), "peer.tensors and wire.messages disagree on dtypes"

_BIG_ENDIAN = sys.byteorder == "big"


def _numpy_view(t: Tensor) -> Tensor:
    """The tensor as one numpy() can show: bfloat16 has no numpy dtype, so view it as int16."""
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t


def to_wire(name: str, t: Tensor) -> WireTensor:
    """Wrap a tensor's bytes without copying a contiguous CPU tensor: do not modify it until sent."""
    if t.dtype not in WIRE_DTYPES:
        raise ValueError(
            f"tensor {name!r}: dtype {t.dtype} cannot travel; use one of {sorted(DTYPES)}"
        )
    flat = t.detach().contiguous().cpu()
    shape = tuple(flat.shape)
    if flat.numel() == 0:
        return WireTensor(name, WIRE_DTYPES[t.dtype], shape, b"")
    array = _numpy_view(flat).numpy()
    if _BIG_ENDIAN:
        array = array.byteswap()  # a copy, in little-endian order
    return WireTensor(name, WIRE_DTYPES[t.dtype], shape, array.data)


def from_wire(w: WireTensor) -> Tensor:
    """An owned, writable CPU tensor with a copy of the bytes, so the receive buffer can be reused."""
    dtype = TORCH_DTYPES[w.dtype]
    out = torch.empty(w.shape, dtype=dtype)
    if out.numel() == 0:
        return out
    array = _numpy_view(out).numpy()
    array.data.cast("B")[:] = w.data  # the one copy; sizes were checked by WireTensor
    if _BIG_ENDIAN:
        array.byteswap(inplace=True)
    return out


def state_to_wire(state: Mapping[str, Tensor]) -> tuple[WireTensor, ...]:
    """A model's state dict as wire tensors, in the state dict's order."""
    return tuple(to_wire(name, t) for name, t in state.items())


def state_from_wire(tensors: Sequence[WireTensor], like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Refuse (ValueError) anything but exactly the names, dtypes and shapes of `like`; else load."""
    received: dict[str, WireTensor] = {}
    for w in tensors:
        if w.name in received:
            raise ValueError(f"state names tensor {w.name!r} twice")
        received[w.name] = w
    missing, extra = sorted(like.keys() - received.keys()), sorted(received.keys() - like.keys())
    if missing or extra:
        raise ValueError(
            f"state does not match this model: missing {missing[:5]}, unexpected {extra[:5]}"
            f"{' (and more)' if len(missing) > 5 or len(extra) > 5 else ''}"
        )
    out: dict[str, Tensor] = {}
    for name, mine in like.items():
        w = received[name]
        want_dtype = WIRE_DTYPES.get(mine.dtype, str(mine.dtype))
        if w.dtype != want_dtype or w.shape != tuple(mine.shape):
            raise ValueError(
                f"tensor {name!r} is {w.dtype} {w.shape}, this model has {want_dtype} "
                f"{tuple(mine.shape)}"
            )
        out[name] = from_wire(w).to(mine.device)
    return out


def check_matrix(w: WireTensor, rows: int, cols: int | None, dtype: str = "float32") -> Tensor:
    """A received (rows, cols) matrix such as logits or embeddings; refuse other shapes, NaN and Inf."""
    if w.dtype != dtype:
        raise ValueError(f"tensor {w.name!r} is {w.dtype}, expected {dtype}")
    if len(w.shape) != 2 or w.shape[0] != rows or (cols is not None and w.shape[1] != cols):
        raise ValueError(
            f"tensor {w.name!r} has shape {w.shape}, expected ({rows}, {'any' if cols is None else cols})"
        )
    t = from_wire(w)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"tensor {w.name!r} holds NaN or infinite values")
    return t
