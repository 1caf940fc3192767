"""Backbone profiles and local pretrained weights (nothing is ever downloaded)."""

import pytest
import torch

from megl.models.backbones import BackboneConfig, build_classifier


@pytest.mark.parametrize("name, channels", [("resnet18", 64), ("vit_b16", 64)])
def test_tiny_profile_gives_an_8x8_cam_at_64px(name, channels):
    out = build_classifier(BackboneConfig(name), 3)(torch.rand(2, 3, 64, 64))
    assert out.logits.shape == (2, 3) and out.activations.shape == (2, channels, 8, 8)


@pytest.mark.parametrize("name, grid, channels, params_m", [("resnet18", 7, 512, 11.2), ("vit_b16", 14, 768, 85.8)])
def test_paper_profile_is_the_real_architecture(name, grid, channels, params_m):
    model = build_classifier(BackboneConfig(name, "paper"), 40)
    out = model(torch.rand(1, 3, 224, 224))
    assert out.activations.shape == (1, channels, grid, grid)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, abs=0.3)


@pytest.mark.parametrize("name", ["resnet18", "vit_b16"])
def test_pretrained_path_loads_local_weights(name, tmp_path):
    torch.manual_seed(0)
    source = build_classifier(BackboneConfig(name), 3)
    source.body.save_pretrained(tmp_path / "weights")
    torch.manual_seed(1)  # a different init: equal weights can only come from the files
    loaded = build_classifier(BackboneConfig(name, pretrained_path=str(tmp_path / "weights")), 3)
    for (k, a), (_, b) in zip(source.body.state_dict().items(), loaded.body.state_dict().items()):
        assert torch.equal(a, b), k


def test_missing_pretrained_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained_path .*nope is not a folder of local weights"):
        build_classifier(BackboneConfig("resnet18", pretrained_path=str(tmp_path / "nope")), 3)
