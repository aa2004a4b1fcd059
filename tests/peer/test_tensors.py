"""Torch <-> wire tensors: bit-exact round trips, strict state matching, checked matrices."""

import warnings

import pytest
import torch

from fedp2p.peer.tensors import (
    TORCH_DTYPES,
    check_matrix,
    from_wire,
    state_from_wire,
    state_to_wire,
    to_wire,
)
from fedp2p.wire.messages import DTYPES, WireTensor


def sample(dtype: torch.dtype, shape: tuple[int, ...] = (3, 4)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        t = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        if t.numel() >= 3:
            t.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -0.0])
        return t
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=dtype)


def bits(t: torch.Tensor) -> bytes:
    """Raw bytes, so NaN payloads and -0.0 compare exactly."""
    return bytes(to_wire("x", t).data)


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_round_trip_of_every_allowed_dtype_is_bit_exact(name):
    original = sample(TORCH_DTYPES[name])

    w = to_wire("layer.weight", original)
    back = from_wire(w)

    assert w.dtype == name and w.shape == (3, 4) and w.nbytes == 12 * DTYPES[name]
    assert back.dtype == original.dtype and back.shape == original.shape
    assert bits(back) == bits(original)


@pytest.mark.parametrize("shape", [(), (0,), (2, 0, 3), (1, 1, 1, 5)])
def test_round_trip_of_odd_shapes(shape):
    original = sample(torch.float32, shape)
    back = from_wire(to_wire("t", original))
    assert back.shape == shape and bits(back) == bits(original)


def test_non_contiguous_and_grad_tensors_travel_in_c_order():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4).requires_grad_()
    back = from_wire(to_wire("t", base.T))
    assert torch.equal(back, base.detach().T.contiguous())


def test_to_wire_does_not_copy_a_contiguous_cpu_tensor():
    t = torch.zeros(4)
    w = to_wire("t", t)
    t[0] = 1.0
    assert from_wire(w)[0].item() == 1.0


def test_from_wire_owns_writable_memory_without_warnings():
    w = WireTensor("t", "float32", (2,), bytes(8))  # read-only bytes
    buffer = bytearray(8)
    shared = WireTensor("u", "float32", (2,), memoryview(buffer))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, u = from_wire(w), from_wire(shared)
    t += 1
    buffer[:4] = b"\xff" * 4  # the receive buffer is reused: the tensor must not change
    assert torch.equal(t, torch.ones(2)) and torch.equal(u, torch.zeros(2))


def test_unsupported_dtype_is_refused():
    with pytest.raises(ValueError, match="complex64"):
        to_wire("t", torch.zeros(2, dtype=torch.complex64))


def model_state() -> dict[str, torch.Tensor]:
    return {
        "conv.weight": torch.randn(4, 1, 3, 3),
        "conv.bias": torch.randn(4),
        "bn.num_batches_tracked": torch.tensor(3),
    }


def test_state_round_trip():
    state = model_state()
    out = state_from_wire(state_to_wire(state), like=model_state())
    assert list(out) == list(state)
    for name in state:
        assert torch.equal(out[name], state[name]) and out[name].dtype == state[name].dtype


def replace(tensors: tuple[WireTensor, ...], name: str, new: WireTensor) -> list[WireTensor]:
    return [new if w.name == name else w for w in tensors]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ws: replace(ws, "conv.bias", to_wire("conv.bias", torch.zeros(5))), "shape|5"),
        (
            lambda ws: replace(ws, "conv.bias", to_wire("conv.bias", torch.zeros(4).double())),
            "float64",
        ),
        (lambda ws: replace(ws, "conv.bias", to_wire("head.bias", torch.zeros(4))), "head.bias"),
        (lambda ws: list(ws[:-1]), "missing"),
        (lambda ws: [*ws, to_wire("evil", torch.zeros(1))], "evil"),
        (lambda ws: [*ws, ws[0]], "twice"),
        (
            lambda ws: replace(ws, "conv.weight", to_wire("conv.weight", torch.zeros(4, 1, 9))),
            "conv.weight",
        ),
    ],
    ids=["shape", "dtype", "renamed", "missing", "extra", "duplicate", "reshaped"],
)
def test_state_from_wire_refuses_anything_but_an_exact_match(change, message):
    like = model_state()
    tensors = change(state_to_wire(model_state()))
    with pytest.raises(ValueError, match=message):
        state_from_wire(tensors, like)


def test_check_matrix_accepts_a_good_matrix():
    t = torch.randn(5, 3)
    assert torch.equal(check_matrix(to_wire("logits", t), 5, 3), t)
    assert torch.equal(check_matrix(to_wire("z", t), 5, None), t)  # any width


@pytest.mark.parametrize(
    ("tensor", "rows", "cols"),
    [
        (torch.tensor([[0.0, float("nan")]]), 1, 2),
        (torch.tensor([[float("inf"), 0.0]]), 1, 2),
        (torch.tensor([[0.0, float("-inf")]], dtype=torch.float32), 1, None),
        (torch.zeros(4, 3), 5, 3),
        (torch.zeros(5, 4), 5, 3),
        (torch.zeros(5), 5, None),
        (torch.zeros(5, 3, 1), 5, 3),
        (torch.zeros(5, 3, dtype=torch.float64), 5, 3),
    ],
    ids=["nan", "inf", "-inf", "rows", "cols", "1d", "3d", "dtype"],
)
def test_check_matrix_refuses(tensor, rows, cols):
    with pytest.raises(ValueError):
        check_matrix(to_wire("m", tensor), rows, cols)
