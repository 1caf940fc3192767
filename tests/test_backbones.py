"""Backbone profiles and local pretrained weights (nothing is ever downloaded)."""

import pytest
import torch

from transformers import BertConfig, BertModel, DeiTConfig, DeiTModel, Dinov2Config, Dinov2Model, ViTConfig, ViTModel

from megl.models.backbones import BackboneConfig, build_classifier
from megl.models.gradcam import class_scores, grad_cam

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
# A ViT-family checkpoint of each kind a user may have: (transformers class, config, patch)
VIT_FAMILY = {
    "vit": (ViTModel, ViTConfig(image_size=64, patch_size=16, **SMALL), 16),
    "deit": (DeiTModel, DeiTConfig(image_size=64, patch_size=16, **SMALL), 16),
    "dinov2": (Dinov2Model, Dinov2Config(image_size=518, patch_size=14, **SMALL), 14),
}


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
    with pytest.raises(FileNotFoundError, match="pretrained_path .*nope is not a folder of local transformers weights"):
        build_classifier(BackboneConfig("resnet18", pretrained_path=str(tmp_path / "nope")), 3)


def _saved(kind, tmp_path):
    cls, cfg, patch = VIT_FAMILY[kind]
    torch.manual_seed(0)
    kwargs = {} if kind == "dinov2" else {"add_pooling_layer": False}
    model = cls(cfg, **kwargs).eval()
    model.save_pretrained(tmp_path / kind)
    return model, str(tmp_path / kind), patch


@pytest.mark.parametrize("kind", sorted(VIT_FAMILY))
@pytest.mark.parametrize("size", [112, 224])
def test_vit_family_cam_is_the_last_blocks_input_on_the_checkpoints_patch_grid(kind, size, tmp_path):
    """Any ViT-family folder under any backbone name (arch: vit): the CAM layer is the patch tokens
    entering the last block, on the input's patch grid (patch 14 or 16; the position grid is resized),
    and the features are the encoder's own output, so the forward is the library's forward."""
    reference, path, patch = _saved(kind, tmp_path)
    classifier = build_classifier(BackboneConfig("my_vit", "paper", path, arch="vit"), 4).eval()
    pixels = torch.rand(2, 3, size, size)
    out = classifier(pixels)
    side = size // patch
    assert out.activations.shape == (2, 32, side, side)
    normalised = classifier.normalise(pixels)
    kwargs = {} if kind == "dinov2" else {"interpolate_pos_encoding": True}
    with torch.no_grad():
        ref = reference(normalised, output_hidden_states=True, **kwargs)
    lead = ref.last_hidden_state.shape[1] - side * side  # CLS (+ DeiT's distillation token)
    assert lead == (2 if kind == "deit" else 1)
    entering_last = ref.hidden_states[-2][:, lead:].transpose(1, 2).reshape(2, 32, side, side)
    torch.testing.assert_close(out.activations, entering_last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.features, ref.last_hidden_state[:, lead:].transpose(1, 2).reshape(2, 32, side, side), atol=1e-5, rtol=1e-5)
    cam = grad_cam(out.activations, class_scores(out.logits, torch.tensor([0, 1])), "create_graph")
    assert cam.shape == (2, side, side) and torch.isfinite(cam).all()


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    BertModel(BertConfig(vocab_size=50, **SMALL)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"holds a 'bert' model; a ViT backbone loads one of \['deit', 'dinov2', 'vit'\]"):
        build_classifier(BackboneConfig("vit_b16", "paper", str(tmp_path / "bert")), 3)
    with pytest.raises(ValueError, match="backbone 'dino': set arch"):
        build_classifier(BackboneConfig("dino", "paper", str(tmp_path / "bert")), 3)


def test_checkpoint_pixel_statistics_are_used(tmp_path):
    _, path, _ = _saved("vit", tmp_path)
    (tmp_path / "vit" / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}')
    classifier = build_classifier(BackboneConfig("vit_b16", "paper", path), 3)
    assert classifier.normalise(torch.ones(1, 3, 2, 2)).eq(1.0).all()
