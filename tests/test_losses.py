"""Each loss term against a hand computation on a toy batch."""

import math

import pytest
import torch

from megl.config import VariantConfig as Terms
from megl.losses import consistency_kl, explanation_loss, prediction_loss, visual_l1

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
