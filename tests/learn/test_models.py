import pytest
import torch

from fedp2p.learn.models import ModelConfig, build_model, count_parameters


@pytest.mark.parametrize("arch", ["cnn3", "cnn5", "cnn7"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_shapes_for_both_input_sizes(arch, channels, size):
    model = build_model(ModelConfig(arch, channels, size, num_classes=10, embed_dim=128), seed=0)
    x = torch.randn(5, channels, size, size)
    z, logits = model.forward_both(x)
    assert z.shape == (5, 128)
    assert logits.shape == (5, 10)
    assert torch.equal(model(x), logits)
    assert torch.equal(model.features(x), z)


def test_depth_is_what_the_name_says():
    for arch, depth in [("cnn3", 3), ("cnn5", 5), ("cnn7", 7)]:
        model = build_model(ModelConfig(arch))
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == depth


def test_seeded_models_are_identical_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(ModelConfig("cnn5"), seed=4)
    after = torch.rand(1)
    b = build_model(ModelConfig("cnn5"), seed=4)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert count_parameters(a) > 0


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model(ModelConfig("cnn9"))
