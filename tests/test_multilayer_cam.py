"""MMEL's multi-layer explainer (megl.models.multilayer_cam): the maps it mixes, the mix itself on
hand-made numbers, that it is Grad-CAM at one depth, and that its layer weights train and export."""

import pytest
import torch

from megl.config import ConfigError, TrainConfig, VariantConfig, build_dataclass
from megl.models.backbones import BackboneConfig, build_classifier
from megl.models.gradcam import class_scores, explain, grad_cam, normalise
from megl.models.megl import MEGL
from megl.models.multilayer_cam import MultiLayerCAM


def test_the_mix_on_hand_made_maps():
    # score = sum(A1) + 2 sum(A2): the channel weights are the mean gradients, 1 and 2, so each
    # depth's Grad-CAM is its activations times that weight
    a1 = torch.tensor([[[[1.0, 1, 3, 3], [1, 1, 3, 3], [0, 0, -2, -2], [0, 0, -2, -2]]]], requires_grad=True)
    a2 = torch.tensor([[[[1.0, -1], [0, 4]]]], requires_grad=True)
    score = a1.sum(dim=(1, 2, 3)) + 2 * a2.sum(dim=(1, 2, 3))
    explainer = MultiLayerCAM(2, eps=0.0)
    with torch.no_grad():
        explainer.layer_logits.copy_(torch.log(torch.tensor([1.0, 3.0])))  # weights 1/4, 3/4
    raw = explainer([a1, a2], score, "detached")
    m1 = torch.tensor([[1.0, 3], [0, -2]]) / 3  # 4x4 -> 2x2 average, over its largest |value|
    m2 = torch.tensor([[2.0, -2], [0, 8]]) / 8
    assert torch.allclose(raw[0], 0.25 * m1 + 0.75 * m2)


@pytest.mark.parametrize("name", ["resnet18", "vit_b16"])
def test_one_depth_is_grad_cam(name):
    torch.manual_seed(0)
    classifier = build_classifier(BackboneConfig(name), 3).eval()
    pixels = torch.rand(3, 3, 64, 64)
    _, cam, _ = explain(classifier, pixels)
    _, cam_1, _ = explain(classifier, pixels, explainer=MultiLayerCAM(1))
    assert torch.allclose(cam, cam_1, atol=1e-5)


@pytest.mark.parametrize("name, depths", [("resnet18", 2), ("vit_b16", 4)])
def test_the_stages_are_in_the_graph_and_leave_the_logits_as_they_are(name, depths):
    torch.manual_seed(0)
    classifier = build_classifier(BackboneConfig(name), 3).eval()
    assert classifier.max_cam_depths == depths
    pixels = torch.rand(2, 3, 64, 64)
    one = classifier(pixels)
    out = classifier(pixels, cam_depths=depths)
    assert torch.equal(one.logits, out.logits)
    assert len(out.stages) == depths and out.stages[-1] is out.activations
    maps = [grad_cam(s, class_scores(out.logits, torch.tensor([0, 1])), relu=False) for s in out.stages]
    assert all(m.abs().sum() > 0 for m in maps)  # every depth reaches the logits


@pytest.mark.parametrize("name", ["resnet18", "vit_b16"])
def test_every_sample_has_its_own_map_at_evaluation(name):
    torch.manual_seed(0)
    classifier = build_classifier(BackboneConfig(name), 3).eval()
    explainer = MultiLayerCAM(classifier.max_cam_depths)
    pixels = torch.rand(4, 3, 64, 64)
    _, together, _ = explain(classifier, pixels, explainer=explainer)
    for i in range(4):
        _, alone, _ = explain(classifier, pixels[i : i + 1], explainer=explainer)
        assert torch.allclose(together[i], alone[0], atol=1e-5)


def test_uniform_weights_until_trained():
    assert torch.equal(MultiLayerCAM(4).layer_weights(), torch.full((4,), 0.25))


def _megl(explainer: str, variant=VariantConfig(visual=True, consistency=True)):
    torch.manual_seed(0)
    classifier = build_classifier(BackboneConfig("resnet18"), 3)
    return MEGL(classifier, None, variant, torch.full((8, 8), 0.5), lambda_visual=1.0, lambda_textual=0.0,
                cam_mode="create_graph", cam_eps=1e-8, explainer=explainer, explainer_layers=4)


def _batch():
    torch.manual_seed(1)
    return {"pixels": torch.rand(4, 3, 64, 64), "label": torch.tensor([0, 1, 2, 0]),
            "has_map": torch.tensor([True, True, False, False]), "gt_map": torch.rand(4, 8, 8)}


def test_the_visual_loss_trains_the_layer_weights():
    model = _megl("multilayer")
    assert model.explainer.depths == 2  # explainer_layers 4, capped at the tiny ResNet's two stages
    out = model(_batch())
    out.loss.backward()
    assert model.explainer.layer_logits.grad is not None and model.explainer.layer_logits.grad.abs().sum() > 0
    assert "explainer.layer_logits" in model.state_dict()


def test_a_variant_chooses_its_explainer_over_train():
    assert _megl("gradcam", VariantConfig(visual=True, explainer="multilayer")).explainer is not None
    assert _megl("multilayer", VariantConfig(visual=True, explainer="gradcam")).explainer is None
    # the training Â is the explainer's: with one layer weight per depth, not Grad-CAM's
    gradcam, multilayer = _megl("gradcam")(_batch()).cam, _megl("multilayer")(_batch()).cam
    assert not torch.allclose(gradcam, multilayer)
    single = normalise(torch.relu(grad_cam(*_last_stage(_megl("gradcam")), relu=False)))
    assert torch.allclose(gradcam, single, atol=1e-6)


def _last_stage(model):
    b = _batch()
    out = model.classifier(b["pixels"])
    return out.activations, class_scores(out.logits, b["label"])


def test_an_unknown_explainer_is_a_config_error():
    with pytest.raises(ConfigError, match="explainer"):
        build_dataclass(TrainConfig, {**_train_block(), "explainer": "multi_layer"}, "train")
    with pytest.raises(ConfigError, match="explainer_layers"):
        build_dataclass(TrainConfig, {**_train_block(), "explainer_layers": 0}, "train").validate("train")


def _train_block() -> dict:
    return dict(seed=0, epochs=1, batch_size=2, lr=1e-3, text_lr=1e-3, weight_decay=0.0, grad_accum=1,
                max_grad_norm=1.0, cam_mode="create_graph", cam_eps=1e-8, lambda_visual=1.0, lambda_textual=0.5)
