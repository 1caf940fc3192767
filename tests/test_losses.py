"""Each loss term against a hand computation on a toy batch."""

import math

import pytest
import torch

from megl.config import VariantConfig as Terms
from megl.losses import prediction_loss
from megl.methods.megl_terms import consistency_kl, explanation_loss, visual_l1

CAM = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]]])
GT = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
MEAN = torch.tensor([[0.25, 0.25], [0.25, 0.25]])


def test_prediction_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    assert prediction_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_visual_l1_by_hand():
    torch.testing.assert_close(visual_l1(CAM, GT), torch.tensor([0.25, 0.5]))


def test_consistency_kl_by_hand():
    kl = consistency_kl(CAM, MEAN, eps=0.0 + 1e-12)
    # sample 0: p = one-hot -> KL = log(1 / 0.25) = log 4
    # sample 1: p = (0.25, 0.25, 0, 0.5) -> 0.25 log 1 + 0.25 log 1 + 0 + 0.5 log 2
    torch.testing.assert_close(kl, torch.tensor([math.log(4), 0.5 * math.log(2)]), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(consistency_kl(torch.zeros(1, 2, 2), MEAN)).all()


def test_explanation_loss_switches_per_sample_and_per_variant():
    has = torch.tensor([True, False])
    kl1 = consistency_kl(CAM, MEAN)[1]
    megl = explanation_loss(CAM, GT, has, MEAN, Terms(visual=True, text=True, consistency=True))
    torch.testing.assert_close(megl, (0.25 + kl1) / 2)  # L1 for sample 0, KL for sample 1
    no_kl = explanation_loss(CAM, GT, has, MEAN, Terms(visual=True, text=True, consistency=False))
    torch.testing.assert_close(no_kl, torch.tensor(0.25 / 2))
    none = explanation_loss(CAM, GT, has, MEAN, Terms(visual=False, text=True, consistency=False))
    assert none.item() == 0.0


def test_softmax_consistency_kl_by_hand():
    from megl.methods.megl_terms import consistency_kl_softmax

    raw = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[math.log(3.0), 0.0], [0.0, 0.0]]])
    kl = consistency_kl_softmax(raw, MEAN, temperature=1.0, eps=1e-12)
    # sample 0: uniform = MEAN -> 0; sample 1: p = (1/2, 1/6, 1/6, 1/6) against 1/4 each
    expected = 0.5 * math.log(2) + 3 * (1 / 6) * math.log(4 / 6)
    torch.testing.assert_close(kl, torch.tensor([0.0, expected]), atol=1e-6, rtol=1e-6)
    # temperature T divides the raw CAM: T = 2 on 2·raw is the same distribution
    torch.testing.assert_close(consistency_kl_softmax(2 * raw, MEAN, temperature=2.0), kl, atol=1e-6, rtol=1e-6)


def test_softmax_kl_gradient_stays_bounded_on_flat_cams_where_minmax_explodes():
    """The cause of MEGL training worse than no guidance (issue 5): near-flat CAMs early in
    training. The min-max form's gradient grows as 1/(max - min); the softmax form's stays <= 1/T."""
    from megl.methods.megl_terms import consistency_kl_softmax
    from megl.models.gradcam import normalise

    torch.manual_seed(0)
    pattern = torch.rand(4, 8, 8)
    mean = torch.rand(8, 8)
    norms = {}
    for spread in (1.0, 1e-2, 1e-4):
        raw = (spread * pattern).requires_grad_()
        consistency_kl(normalise(torch.relu(raw)), mean).sum().backward()
        minmax = raw.grad.abs().max().item()
        raw.grad = None
        consistency_kl_softmax(raw, mean).sum().backward()
        norms[spread] = (minmax, raw.grad.abs().max().item())
    assert norms[1e-4][0] > 1000 * norms[1.0][0]  # min-max: 1/spread
    assert all(soft <= 1.0 for _, soft in norms.values())  # softmax: bounded by 1/T


def test_explanation_loss_softmax_input_needs_the_raw_cam():
    from megl.methods.megl_terms import consistency_kl_softmax

    has = torch.tensor([True, False])
    raw = torch.randn(2, 2, 2)
    terms = Terms(visual=True, text=True, consistency=True)
    loss = explanation_loss(CAM, GT, has, MEAN, terms, raw_cam=raw, consistency_input="softmax", temperature=0.5)
    torch.testing.assert_close(loss, (0.25 + consistency_kl_softmax(raw, MEAN, 0.5)[1]) / 2)
    with pytest.raises(ValueError, match="raw_cam"):
        explanation_loss(CAM, GT, has, MEAN, terms, consistency_input="softmax")


def test_consistency_targets():
    """L_dc's target: Ā, a uniform map, or Ā's cells in one fixed order (same values, no place)."""
    from megl.methods.megl_terms import consistency_target_map

    mean_map = torch.arange(16, dtype=torch.float32).view(4, 4)
    assert consistency_target_map(mean_map, "mean_map") is mean_map
    assert torch.equal(consistency_target_map(mean_map, "uniform"), torch.ones(4, 4))
    shuffled = consistency_target_map(mean_map, "shuffled")
    assert torch.equal(shuffled, consistency_target_map(mean_map, "shuffled"))  # one fixed order
    assert torch.equal(shuffled.flatten().sort().values, mean_map.flatten()) and not torch.equal(shuffled, mean_map)
