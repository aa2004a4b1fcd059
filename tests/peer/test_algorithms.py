import random

import numpy as np
import pytest
import torch

from fedp2p.config import build_config
from fedp2p.learn.learner import Learner, TrainSettings
from fedp2p.learn.models import ModelConfig
from fedp2p.peer.algorithms import (
    PLANS,
    audience,
    build_payloads,
    expected,
    learn_from,
    round_reference,
)
from fedp2p.peer.tensors import state_to_wire, to_wire
from fedp2p.wire.messages import Payload

CONFIG = build_config(
    {"clients": 4, "archs": ["cnn3", "cnn3", "cnn5", "cnn5"], "kd_samples": 16, "kd_batch_size": 8}
)


def learner(client: int) -> Learner:
    rng = np.random.default_rng(client)
    x = rng.integers(0, 255, (24, 1, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 24)
    return Learner(
        ModelConfig(CONFIG.arch_of(client)),
        x,
        y,
        x[:4],
        y[:4],
        TrainSettings(lr=0.05, batch_size=8, seed=client),
        torch.device("cpu"),
        model_seed=client,
    )


def reference() -> torch.Tensor:
    return torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def payloads_from(clients, plan, ref):
    got = {}
    for c in clients:
        for kind, p in build_payloads(plan, learner(c), c, 1, ref).items():
            got[(c, kind)] = p
    return got


def params(learner: Learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.model.parameters()]


def test_who_gets_what():
    neigh = frozenset({1, 2, 3})
    assert expected(PLANS["hybrid"], CONFIG, 0, neigh) == {
        (1, "weights"),
        (1, "logits"),
        (1, "features"),
        (2, "logits"),
        (2, "features"),
        (3, "logits"),
        (3, "features"),
    }
    assert expected(PLANS["local"], CONFIG, 0, neigh) == set()
    assert audience("weights", CONFIG, 0, neigh) == [1]
    assert audience("logits", CONFIG, 0, neigh) == [1, 2, 3]


def test_round_reference_is_shared_and_changes_by_round():
    a, b = round_reference(CONFIG, 1, 100), round_reference(CONFIG, 1, 100)
    assert np.array_equal(a, b) and len(a) == 16
    assert not np.array_equal(a, round_reference(CONFIG, 2, 100))


@pytest.mark.parametrize("algorithm", ["weights", "logits", "features", "hybrid"])
def test_learning_does_not_depend_on_arrival_order(algorithm):
    plan, ref = PLANS[algorithm], reference()
    got = payloads_from([1, 2, 3], plan, ref)
    keys = list(got)
    random.Random(1).shuffle(keys)
    shuffled = {k: got[k] for k in keys}
    a, b = learner(0), learner(0)
    before = params(a)
    learn_from(plan, CONFIG, a, got, ref, torch.Generator().manual_seed(0))
    learn_from(plan, CONFIG, b, shuffled, ref, torch.Generator().manual_seed(0))
    for pa, pb in zip(params(a), params(b), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(x, y) for x, y in zip(before, params(a), strict=True))


def test_weights_are_averaged_with_same_arch_neighbours_by_sample_count():
    plan, ref = PLANS["weights"], reference()
    me, other = learner(0), learner(1)
    got = payloads_from([1], plan, ref)
    expected_state = {
        k: (me.model.state_dict()[k] * 24 + other.model.state_dict()[k] * 24) / 48
        for k in me.model.state_dict()
    }
    info = learn_from(plan, CONFIG, me, got, ref, torch.Generator())
    assert info["averaged"] == 1
    for k, v in me.model.state_dict().items():
        torch.testing.assert_close(v, expected_state[k])


def test_hostile_or_broken_payloads_are_skipped_not_fatal():
    plan, ref = PLANS["hybrid"], reference()
    got = payloads_from([1, 2], plan, ref)
    got[(1, "weights")] = Payload(
        1, 1, "weights", (to_wire("conv.0.weight", torch.zeros(3, 3)),), {"samples": 5}
    )
    got[(2, "logits")] = Payload(
        2, 1, "logits", (to_wire("logits", torch.full((16, 10), float("nan"))),)
    )
    got[(2, "features")] = Payload(2, 1, "features", (to_wire("embeddings", torch.zeros(5, 128)),))
    me = learner(0)
    before = params(me)
    info = learn_from(plan, CONFIG, me, got, ref, torch.Generator().manual_seed(0))
    assert info["averaged"] == 0
    assert info["teachers"] == 1  # peer 1's logits and features were fine
    assert all(torch.isfinite(p).all() for p in me.model.parameters())
    assert any(not torch.equal(x, y) for x, y in zip(before, params(me), strict=True))


def test_non_finite_weights_from_a_neighbour_are_refused():
    plan, ref = PLANS["weights"], reference()
    got = payloads_from([1], plan, ref)
    poisoned = {k: v.clone() for k, v in learner(1).model.state_dict().items()}
    poisoned["head.bias"][0] = float("nan")
    got[(1, "weights")] = Payload(1, 1, "weights", state_to_wire(poisoned), {"samples": 24})
    me = learner(0)
    info = learn_from(plan, CONFIG, me, got, ref, torch.Generator())
    assert info["averaged"] == 0
    assert all(torch.isfinite(p).all() for p in me.model.parameters())


def test_a_diverging_distillation_is_rolled_back(monkeypatch):
    plan, ref = PLANS["logits"], reference()
    got = payloads_from([1], plan, ref)
    me = learner(0)
    before = params(me)

    def explode(learner, *args, **kwargs):
        with torch.no_grad():
            next(learner.model.parameters()).fill_(float("inf"))
        return {}

    monkeypatch.setattr("fedp2p.peer.algorithms.distill_epoch", explode)
    info = learn_from(plan, CONFIG, me, got, ref, torch.Generator())
    assert info["reverted"] == 1
    for a, b in zip(before, params(me), strict=True):
        assert torch.equal(a, b)
