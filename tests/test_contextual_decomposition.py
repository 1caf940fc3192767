"""Contextual decomposition (CDEP's CD) of the ResNet classifier: additivity, each rule by hand,
gradients, and a clear refusal for ViT."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import ResNetConfig, ResNetModel

from megl.models.backbones import BackboneConfig, build_classifier
from megl.models.contextual_decomposition import (
    UnsupportedBackbone,
    cd_batchnorm,
    cd_conv,
    cd_conv_bn,
    cd_linear,
    cd_logits,
    cd_maxpool,
    cd_relu,
    split_bias,
    split_pair,
)


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Freshly built BNs are the identity in eval mode, which would hide a wrong BN rule."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def _resnet(profile="tiny", classes=5, seed=0):
    torch.manual_seed(seed)
    return _randomise_bn(build_classifier(BackboneConfig("resnet18", profile), classes))


def _pair(*tensors):
    return torch.cat(tensors)


@pytest.fixture(scope="module")
def tiny():
    return _resnet()


def _masks(b, size):
    g = torch.Generator().manual_seed(1)
    return {
        "binary": (torch.rand(b, size, size, generator=g) > 0.5).float(),
        "box": F.pad(torch.ones(b, 1, size // 2, size // 2), (4, size // 2 - 4, 8, size // 2 - 8)),
        "soft": torch.rand(b, 1, size, size, generator=g),
    }


@pytest.mark.parametrize("kind", ["binary", "box", "soft"])
def test_rel_plus_irrel_is_the_eval_logits(tiny, kind):
    torch.manual_seed(2)
    pixels = torch.rand(6, 3, 64, 64)
    tiny.train()  # CD must use running statistics whatever the mode
    rel, irrel = cd_logits(tiny, pixels, _masks(6, 64)[kind])
    with torch.no_grad():
        logits = tiny.eval()(pixels).logits
    assert rel.shape == irrel.shape == (6, 5)
    torch.testing.assert_close(rel + irrel, logits, atol=1e-4, rtol=0)
    assert rel.abs().min() > 0 and irrel.abs().min() > 0  # a real split, not all in one part


def test_additivity_on_the_paper_resnet18():
    model = _resnet("paper", 7).eval()
    pixels = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        rel, irrel = cd_logits(model, pixels, _masks(2, 224)["binary"])
        torch.testing.assert_close(rel + irrel, model(pixels).logits, atol=1e-4, rtol=0)


def test_additivity_with_bottleneck_blocks():
    model = _resnet()
    torch.manual_seed(3)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[2, 1], layer_type="bottleneck")
    model.body = _randomise_bn(ResNetModel(cfg))
    model.head = nn.Linear(32, 5)
    pixels = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        rel, irrel = cd_logits(model.eval(), pixels, _masks(3, 32)["binary"])
        torch.testing.assert_close(rel + irrel, model(pixels).logits, atol=1e-4, rtol=0)


def test_whole_region_is_all_rel_and_empty_region_all_irrel(tiny):
    pixels = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        logits = tiny.eval()(pixels).logits
        rel, irrel = cd_logits(tiny, pixels, torch.ones(4, 64, 64))
        assert irrel.abs().max() < 1e-5
        torch.testing.assert_close(rel, logits, atol=1e-5, rtol=0)
        rel, irrel = cd_logits(tiny, pixels, torch.zeros(4, 1, 64, 64))
        assert rel.abs().max() < 1e-5
        torch.testing.assert_close(irrel, logits, atol=1e-5, rtol=0)


def test_region_shape_must_match_the_pixels(tiny):
    with pytest.raises(ValueError, match="does not match"):
        cd_logits(tiny, torch.rand(2, 3, 64, 64), torch.ones(2, 32, 32))


def test_bias_split_in_proportion_to_magnitudes():
    rel = torch.tensor([[3.0, 0.0, -1.0, 0.0]])
    irrel = torch.tensor([[1.0, 2.0, -1.0, 0.0]])
    bias = torch.tensor([4.0, 4.0, 2.0, 6.0])
    out_rel, out_irrel = split_pair(split_bias(_pair(rel, irrel), bias))
    # shares 3/4, 0/2, 1/2 and, for 0/0, an even split
    torch.testing.assert_close(out_rel, torch.tensor([[6.0, 0.0, 0.0, 3.0]]))
    torch.testing.assert_close(out_irrel, torch.tensor([[2.0, 6.0, 0.0, 3.0]]))


def test_linear_rule_by_hand():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        lin.bias.fill_(3.0)
    rel, irrel = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, -0.5]])
    out_rel, out_irrel = split_pair(cd_linear(_pair(rel, irrel), lin))
    # r = 3, i = -1: bias 3 split 3/4 : 1/4
    torch.testing.assert_close(out_rel, torch.tensor([[3.0 + 2.25]]))
    torch.testing.assert_close(out_irrel, torch.tensor([[-1.0 + 0.75]]))


def test_conv_rule_by_hand():
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    rel, irrel = torch.randn(2, 2, 5, 5), torch.randn(2, 2, 5, 5)
    out_rel, out_irrel = split_pair(cd_conv(_pair(rel, irrel), conv))
    zero = conv(torch.zeros_like(rel))
    r, i = conv(rel) - zero, conv(irrel) - zero
    share = r.abs() / (r.abs() + i.abs())
    torch.testing.assert_close(out_rel, r + share * zero)
    torch.testing.assert_close(out_irrel, i + (1 - share) * zero)
    # bias-free (as in transformers' ResNet): each part is just the conv of that part
    conv.bias = None
    out_rel, out_irrel = split_pair(cd_conv(_pair(rel, irrel), conv))
    torch.testing.assert_close(out_rel, conv(rel))
    torch.testing.assert_close(out_irrel, conv(irrel))


def _random_bn(channels=3):
    bn = _randomise_bn(nn.BatchNorm2d(channels))
    return bn.train()  # CD must still use the running statistics


def test_batchnorm_rule_uses_running_stats_in_train_mode():
    torch.manual_seed(5)
    bn = _random_bn()
    rel, irrel = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    before = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    out_rel, out_irrel = split_pair(cd_batchnorm(_pair(rel, irrel), bn))

    def eval_bn(x):
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)

    shift = eval_bn(torch.zeros_like(rel))
    r, i = eval_bn(rel) - shift, eval_bn(irrel) - shift
    expected_rel = r + r.abs() / (r.abs() + i.abs()) * shift
    torch.testing.assert_close(out_rel, expected_rel)
    torch.testing.assert_close(out_irrel, eval_bn(rel + irrel) - expected_rel)  # the reference formulation
    for a, b in zip(before, (bn.running_mean, bn.running_var, bn.num_batches_tracked)):
        assert torch.equal(a, b)


def test_folded_conv_bn_equals_conv_then_bn():
    torch.manual_seed(6)
    conv, bn = nn.Conv2d(2, 3, 3, padding=1, bias=False), _random_bn()
    pair = torch.randn(4, 2, 6, 6)
    torch.testing.assert_close(cd_conv_bn(pair, conv, bn), cd_batchnorm(cd_conv(pair, conv), bn))


def test_relu_rule_by_hand():
    rel = torch.tensor([[2.0, -1.0, 1.0, -2.0]])
    irrel = torch.tensor([[-1.0, 3.0, -3.0, 1.0]])
    out_rel, out_irrel = split_pair(cd_relu(_pair(rel, irrel)))
    torch.testing.assert_close(out_rel, torch.tensor([[2.0, 0.0, 1.0, 0.0]]))
    # relu(rel + irrel) = [1, 2, 0, 0], minus relu(rel)
    torch.testing.assert_close(out_irrel, torch.tensor([[-1.0, 2.0, -1.0, 0.0]]))


def test_maxpool_gathers_both_parts_at_the_indices_of_the_sum():
    rel = torch.tensor([[[[5.0, 0.0], [0.0, 0.0]]]])
    irrel = torch.tensor([[[[-4.0, 3.0], [0.0, 2.5]]]])  # sum [1, 3; 0, 2.5]: position (0, 1) wins
    out_rel, out_irrel = split_pair(cd_maxpool(_pair(rel, irrel), nn.MaxPool2d(2)))
    assert out_rel.item() == 0.0 and out_irrel.item() == 3.0
    torch.manual_seed(7)
    rel, irrel = torch.randn(2, 3, 9, 9), torch.randn(2, 3, 9, 9)
    pool = nn.MaxPool2d(3, 2, 1)  # the stem's pool
    out_rel, out_irrel = split_pair(cd_maxpool(_pair(rel, irrel), pool))
    torch.testing.assert_close(out_rel + out_irrel, pool(rel + irrel))


def test_gradients_reach_the_parameters_and_running_stats_stay(tiny):
    tiny.train().zero_grad()
    stats = {k: v.clone() for k, v in tiny.state_dict().items() if "running" in k or "num_batches" in k}
    pixels, region = torch.rand(4, 3, 64, 64), _masks(4, 64)["binary"]
    rel, irrel = cd_logits(tiny, pixels, region)
    torch.stack([rel, irrel], -1).softmax(-1)[..., 0].mean().backward()  # CDEP's penalty
    grads = [tiny.body.embedder.embedder.convolution.weight.grad, tiny.head.weight.grad, tiny.head.bias.grad]
    for g in grads:
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    for k, v in tiny.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k
    tiny.zero_grad()


def test_deterministic(tiny):
    pixels, region = torch.rand(2, 3, 64, 64), _masks(2, 64)["soft"]
    with torch.no_grad():
        a, b = cd_logits(tiny.eval(), pixels, region), cd_logits(tiny, pixels, region)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_vit_is_refused():
    vit = build_classifier(BackboneConfig("vit_b16"), 5)
    with pytest.raises(UnsupportedBackbone, match="no faithful contextual decomposition exists for ViT"):
        cd_logits(vit, torch.rand(1, 3, 64, 64), torch.ones(1, 64, 64))
    with pytest.raises(UnsupportedBackbone, match="ResNetClassifier"):
        cd_logits(nn.Linear(2, 2), torch.rand(1, 3, 64, 64), torch.ones(1, 64, 64))
    assert issubclass(UnsupportedBackbone, ValueError)
