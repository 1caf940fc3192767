"""The visual explanation-guided baselines' losses (megl.methods: res, cdep, rrr; the shared pieces in
megl.losses) against hand computations on toy batches, and each one's term in the MEGL module."""

import math

import numpy as np
import pytest
import torch

from megl import losses
from megl.methods import cdep, res, rrr
from megl.config import VariantConfig
from megl.models.backbones import BackboneConfig, build_classifier
from megl.models.megl import MEGL

CAM = torch.tensor([[[0.0, 0.5], [1.0, 0.25]], [[1.0, 0.0], [0.5, 0.5]]])
TARGET = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])


def test_positive_region_and_its_nearest_grid_label():
    full = torch.zeros(1, 4, 4)
    full[0, 0, 0] = 0.01  # any positive value is in the region (A > 0), as the mIoU's GT
    full[0, 2:, 2:] = 1.0
    assert losses.positive_region(full).sum() == 5
    # nearest from 4x4 to 2x2 reads pixels (0,0), (0,2), (2,0), (2,2)
    assert losses.positive_at_grid(full, 2).tolist() == [[[1.0, 0.0], [0.0, 1.0]]]


def test_annotated_mean_counts_only_annotated_samples():
    assert losses.annotated_mean(torch.tensor([2.0, 4.0, 6.0]), torch.tensor([True, False, True])) == 4.0
    assert losses.annotated_mean(torch.tensor([2.0, 4.0]), torch.tensor([False, False])) == 0.0


def test_gradia_is_mean_absolute_error_per_sample():
    # sample 0: |0-0| + |.5-1| + |1-1| + |.25-0| = .75 -> /4; sample 1: 0 + 0 + .5 + .5 = 1 -> /4
    assert torch.allclose(res.gradia_loss(CAM, TARGET), torch.tensor([0.75 / 4, 1.0 / 4]))


def test_haics_is_bce_over_the_annotated_cells():
    cam = torch.tensor([[[0.9, 0.2]]])
    target = torch.tensor([[[1.0, 0.0]]])
    by_hand = -(math.log(0.9) + math.log(0.8)) / 2
    assert res.haics_loss(cam, target).item() == pytest.approx(by_hand, rel=1e-6)
    # only the first cell annotated: its BCE alone (sum(bce * m) / sum(m), not RES.py's scalar * mask)
    only_first = res.haics_loss(cam, target, torch.tensor([[[1.0, 0.0]]]))
    assert only_first.item() == pytest.approx(-math.log(0.9), rel=1e-6)
    # a cell at exactly 0 or 1 stays finite (BCELoss's clamp at -100)
    assert torch.isfinite(res.haics_loss(torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[1.0, 0.0]]]))).all()


def test_gaussian_blur_is_opencvs_3x3_kernel_with_reflect_101_border():
    x = torch.zeros(1, 5, 5)
    x[0, 2, 2] = 16.0
    assert res.gaussian_blur_3x3(x)[0, 1:4, 1:4].tolist() == [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    # the border against a loop over numpy's 'reflect' padding (OpenCV's BORDER_REFLECT_101: gfedcb|abcdefgh)
    torch.manual_seed(0)
    maps = torch.rand(2, 4, 4)
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16
    expected = np.zeros((2, 4, 4))
    for b in range(2):
        padded = np.pad(maps[b].numpy().astype(np.float64), 1, mode="reflect")
        for i in range(4):
            for j in range(4):
                expected[b, i, j] = (padded[i : i + 3, j : j + 3] * k).sum()
    assert np.allclose(res.gaussian_blur_3x3(maps).numpy(), expected, atol=1e-6)


def test_res_robust_threshold_is_the_smallest_cam_on_a_positive_cell():
    has = torch.tensor([True, True])
    # positive cells: (0,1)=.5, (1,0)=1.0 in sample 0 and (0,0)=1.0 in sample 1 -> a = 0.5
    cells = [0.5, 1.0, 1.0]
    by_hand = sum(abs(math.tanh(5 * (c - 0.5)) - 1) for c in cells) / 3
    assert res.res_robust_loss(CAM, TARGET, has).item() == pytest.approx(by_hand, rel=1e-6)
    # an unannotated sample's cells take no part in a or in the sum
    only_second = res.res_robust_loss(CAM, TARGET, torch.tensor([False, True]))
    assert only_second.item() == pytest.approx(abs(math.tanh(0.0) - 1), rel=1e-6)


def test_res_loss_adds_the_slack_robust_term_and_the_transformed_l1():
    has = torch.tensor([True, True])
    transformed = torch.full_like(CAM, 0.5)
    robust = res.res_robust_loss(CAM, TARGET, has).item()
    l1 = res.gradia_loss(CAM, transformed).mean().item()
    for eta in (0.0, 0.1, 10.0):
        expected = max(robust - eta, 0.0) + l1
        assert res.res_loss(CAM, TARGET, transformed, has, eta).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("size,grid,stride", [(64, 8, 8), (224, 7, 32)])
def test_res_l_transform_maps_the_image_mask_to_the_cam_grid(size, grid, stride):
    torch.manual_seed(0)
    t = res.LearnedMaskTransform(size, grid)
    assert t.conv.kernel_size == (2 * stride, 2 * stride) and t.conv.stride == (stride, stride)
    mask = (torch.rand(3, size, size) > 0.7).float()
    out = t(mask)
    assert out.shape == (3, grid, grid)
    flat = out.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(3)) and (flat.max(1).values <= 1).all()
    assert (flat.max(1).values > 0.99).all()
    with pytest.raises(ValueError, match="even multiple"):
        res.LearnedMaskTransform(60, 8)


def test_rrr_penalty_sums_squared_input_gradients_in_the_irrelevant_region():
    grads = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]])  # (1, 2 channels, 2, 2)
    irrelevant = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # channel 0: 1 + 16, channel 1: 1 + 1
    assert rrr.rrr_penalty(grads, irrelevant).tolist() == [19.0]


def test_cdep_penalty_is_the_region_share_of_the_true_class():
    rel = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    irrel = torch.tensor([[0.0, 5.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    expected = [1 / (1 + math.exp(-2.0)), 0.5]
    assert cdep.cdep_penalty(rel, irrel, labels).tolist() == pytest.approx(expected)


def _batch(size=64, n=4, grid=8):
    torch.manual_seed(0)
    input_map = torch.zeros(n, size, size)
    input_map[:, 16:40, 20:44] = 1.0
    return {
        "pixels": torch.rand(n, 3, size, size), "label": torch.arange(n) % 3,
        "gt_map": torch.nn.functional.adaptive_avg_pool2d(input_map.unsqueeze(1), grid).squeeze(1),
        "input_map": input_map, "has_map": torch.tensor([True, False, True, True]), "explanation": [""] * n,
    }


@pytest.mark.parametrize("loss", ["gradia", "haics", "res_g", "res_l", "rrr"])
def test_each_baseline_term_is_its_loss_on_the_annotated_samples(loss):
    torch.manual_seed(0)
    classifier = build_classifier(BackboneConfig("resnet18"), 3)
    batch = _batch()
    variant = VariantConfig(method=loss, weight=2.0, cam_mode="detached" if loss != "rrr" else None)
    model = MEGL(classifier, None, variant, torch.ones(8, 8), lambda_visual=1.0, lambda_textual=0.0,
                 cam_mode="create_graph", cam_eps=1e-8, image_size=64)
    out = model(batch)
    assert set(out.terms) == {"pred", loss}
    assert out.loss == out.terms["pred"] + out.terms[loss]
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in classifier.parameters() if p.grad is not None)
    if loss == "res_l":
        assert model.loss_state.conv.weight.grad.abs().sum() > 0  # trained with the model
    # unannotated samples do not move the term: changing their maps changes nothing
    other = dict(batch, input_map=batch["input_map"].clone())
    other["input_map"][1] = 1.0
    again = model(other)
    assert torch.allclose(again.terms[loss], out.terms[loss])
