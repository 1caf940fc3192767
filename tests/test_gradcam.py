"""Grad-CAM against Captum's LayerGradCam, and the two differentiation modes."""

import pytest
import torch
from captum.attr import LayerGradCam

from megl.models.backbones import BackboneConfig, build_classifier
from megl.models.gradcam import class_scores, grad_cam, normalise

BACKBONES = ["resnet18", "vit_b16"]


def model_and_batch(name, seed=0, classes=5):
    torch.manual_seed(seed)
    model = build_classifier(BackboneConfig(name), classes).eval()
    x = torch.rand(4, 3, 64, 64)
    y = torch.tensor([0, 1, 2, 3])
    return model, x, y


@pytest.mark.parametrize("name", BACKBONES)
def test_matches_captum_layer_gradcam(name):
    model, x, y = model_and_batch(name)
    out = model(x)
    ours = grad_cam(out.activations, class_scores(out.logits, y), mode="detached")
    captum = LayerGradCam(lambda inp: model(inp).logits, model.cam_layer)
    ref = captum.attribute(x, target=y, relu_attributions=True).squeeze(1)
    assert ours.shape == ref.shape == (4, 8, 8)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # one batched call equals four single-sample calls
    singles = []
    for i in range(4):
        o = model(x[i : i + 1])
        singles.append(grad_cam(o.activations, class_scores(o.logits, y[i : i + 1])))
    torch.testing.assert_close(ours, torch.cat(singles), atol=1e-5, rtol=1e-5)


def test_normalise_is_per_sample():
    cam = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[10.0, 10.0], [10.0, 30.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = normalise(cam)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    torch.testing.assert_close(out[1], torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    assert out[2].abs().sum() == 0  # a constant CAM does not divide by zero


@pytest.mark.parametrize("name", BACKBONES)
def test_create_graph_and_detached_give_different_gradients(name):
    grads = {}
    for mode in ("create_graph", "detached"):
        model, x, y = model_and_batch(name)
        model.train()
        out = model(x)
        cam = normalise(grad_cam(out.activations, class_scores(out.logits, y), mode))
        target = torch.zeros_like(cam)
        target[:, :4, :4] = 1.0
        (cam - target).abs().mean().backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        assert all(torch.isfinite(g).all() for g in grads[mode].values())
    # The head enters the CAM only through the channel weights: it learns from the CAM loss only
    # when those weights are differentiated.
    assert "head.weight" in grads["create_graph"] and "head.weight" not in grads["detached"]
    body = sorted(n for n in grads["detached"] if n.startswith("body."))
    assert body and sum(grads["detached"][n].abs().sum() for n in body) > 0
    same_body = all(torch.allclose(grads["create_graph"][n], grads["detached"][n]) for n in body)
    if name == "resnet18":
        # GAP + linear head: d logit / dA = W_c / (h w) does not depend on A, so the second-order
        # term through the body is exactly zero; the modes differ in the head's gradient only.
        assert same_body
    else:
        assert not same_body  # ViT: the last block makes the weights depend on the activations


@pytest.mark.parametrize("name", BACKBONES)
def test_cam_loss_trains_the_backbone_body(name):
    """The explanation loss alone moves the weights below the CAM layer (it is in the graph)."""
    model, x, y = model_and_batch(name)
    model.train()
    out = model(x)
    cam = normalise(grad_cam(out.activations, class_scores(out.logits, y)))
    cam.mean().backward()
    body = [p for n, p in model.named_parameters() if n.startswith("body.") and p.grad is not None]
    assert body and sum(p.grad.abs().sum() for p in body) > 0


def test_resnet_batchnorm_statistics_update_once_per_step():
    model, x, y = model_and_batch("resnet18")
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.num_batches_tracked.item()
    out = model(x)
    cam = grad_cam(out.activations, class_scores(out.logits, y))
    (cam.mean() + out.logits.sum()).backward()
    assert bn.num_batches_tracked.item() == before + 1


def test_bad_mode():
    model, x, y = model_and_batch("resnet18")
    out = model(x)
    with pytest.raises(ValueError, match="unknown Grad-CAM mode"):
        grad_cam(out.activations, class_scores(out.logits, y), mode="hooks")
